"""`t5x-lite convert`: Hugging Face T5 <-> t5x_lite checkpoints.

    t5x-lite convert hf-to-t5x --input HF_DIR --output CKPT_DIR [--vocabulary SPEC]
    t5x-lite convert t5x-to-hf --input CKPT_DIR --output HF_DIR [--step N] [--vocabulary SPEC]

HF_DIR is what `T5ForConditionalGeneration.save_pretrained` writes (config.json +
model.safetensors); CKPT_DIR is a t5x_lite checkpoint (t5x_lite/checkpoints.py
layout; hf-to-t5x writes a params-only step 0; t5x-to-hf also takes a training
workdir and reads it with t5x_lite.loading.load_model).  Only safetensors + numpy are
needed: no torch, no transformers.  The tokenizer travels too (data/hf_tokenizer.py):
t5x-to-hf writes the checkpoint's SentencePiece model as spiece.model plus tokenizer.json,
tokenizer_config.json and special_tokens_map.json; hf-to-t5x copies HF_DIR/spiece.model
into CKPT_DIR and records it as the checkpoint's vocabulary (unless --vocabulary is given).

The HF <-> t5x_lite mapping of configs and weights is t5x_lite/convert/mapping.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np

from t5x_lite.convert.mapping import GENERATION_CONFIG, hf_to_t5x_params, model_config_to_hf, t5x_to_hf_tensors
from t5x_lite.data import SentencePieceVocabulary, checkpoint_vocabulary, get_vocabulary, vocabulary_fingerprint
from t5x_lite.data import hf_tokenizer
from t5x_lite import jsonio
from t5x_lite.errors import ArgParser, UserError, ensure_dir


# ----------------------------------------------------------------------------- files
def read_safetensors(path: str) -> dict:
    """{name: np.ndarray}; bfloat16 tensors come back as ml_dtypes.bfloat16 arrays."""
    from safetensors import safe_open
    out = {}
    try:
        with safe_open(path, framework="numpy") as f:
            names = list(f.keys())
            for name in names:
                try:
                    out[name] = f.get_tensor(name)
                except TypeError:        # numpy has no bfloat16: read it through JAX (ml_dtypes)
                    with safe_open(path, framework="flax") as g:
                        out[name] = np.asarray(g.get_tensor(name))
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    return out


def read_hf_dir(hf_dir: str) -> tuple[dict, dict]:
    """(config.json dict, tensors) of a save_pretrained directory."""
    if not os.path.isdir(hf_dir):
        raise UserError(f"Hugging Face model directory not found: {hf_dir}")
    cfg_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise UserError(f"{hf_dir} has no config.json (expected a save_pretrained directory)")
    try:
        with open(cfg_path) as f:
            hf_config = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot parse {cfg_path}: {e}") from None
    if not isinstance(hf_config, dict):
        raise UserError(f"{cfg_path} is not a JSON object")
    st_path = os.path.join(hf_dir, "model.safetensors")
    if not os.path.isfile(st_path):
        sharded = os.path.join(hf_dir, "model.safetensors.index.json")
        if os.path.isfile(sharded):
            with open(sharded) as f:
                files = sorted(set(json.load(f).get("weight_map", {}).values()))
            tensors = {}
            for name in files:
                tensors.update(read_safetensors(os.path.join(hf_dir, name)))
            return hf_config, tensors
        hint = " (only pytorch_model.bin: re-save it with safe_serialization=True)" if os.path.isfile(
            os.path.join(hf_dir, "pytorch_model.bin")) else ""
        raise UserError(f"{hf_dir} has no model.safetensors{hint}")
    return hf_config, read_safetensors(st_path)


def hf_to_t5x(hf_dir: str, ckpt_dir: str, vocabulary: str | None = None, overwrite: bool = False,
              scan_layers: bool = False) -> str:
    """Convert a save_pretrained directory to a params-only step-0 checkpoint. Returns the step dir."""
    from t5x_lite.checkpoints import save_params_checkpoint   # lazy: keeps `t5x-lite convert --help` fast (no JAX)
    hf_config, tensors = read_hf_dir(hf_dir)
    params, cfg = hf_to_t5x_params(tensors, hf_config)
    if scan_layers:   # the layout a scan_layers=True training run restores as init_checkpoint
        from t5x_lite.models import scan_params   # lazy: keeps `t5x-lite convert --help` fast (no JAX)
        params, cfg.scan_layers = scan_params(params), True
    fingerprint, spiece = None, os.path.join(hf_dir, hf_tokenizer.SPIECE)
    if vocabulary is None and os.path.isfile(spiece):   # the HF tokenizer's model becomes the checkpoint's
        try:
            vocab = SentencePieceVocabulary(spiece, hf_tokenizer.extra_ids_of_hf_dir(hf_dir))
            hf_tokenizer.check_sentinel_ids(hf_dir, vocab)
        except UserError as e:
            raise UserError(f"{e} (pass --vocabulary SPEC to use another vocabulary)") from None
        vocabulary = f"spm:{os.path.join(os.path.abspath(ckpt_dir), hf_tokenizer.SPIECE)}:{vocab.extra_ids}"
    elif vocabulary is not None:
        vocab, spiece = get_vocabulary(vocabulary), None
    if vocabulary is not None:
        fingerprint = vocabulary_fingerprint(vocab)
        if vocab.vocab_size > cfg.vocab_size:
            raise UserError(f"vocabulary {vocabulary!r} has {vocab.vocab_size} ids but the model only "
                            f"{cfg.vocab_size} embeddings")
    replace = _prepare_output(ckpt_dir, overwrite, is_checkpoint=True)
    assets = {}
    if vocabulary and spiece:   # copied into the checkpoint, where the recorded spec points
        with open(spiece, "rb") as f:
            assets[hf_tokenizer.SPIECE] = f.read()
    config = {"model": cfg.to_dict(), "vocabulary": vocabulary, "vocabulary_fingerprint": fingerprint,
              "converted_from": {"format": "huggingface_t5", "feed_forward_proj": hf_config.get("feed_forward_proj"),
                                 "transformers_version": hf_config.get("transformers_version")}}
    try:
        if not replace:
            write_files(ckpt_dir, assets)
            return save_params_checkpoint(ckpt_dir, params, config, step=0)
        return _replace_checkpoint(ckpt_dir, params, config, assets)
    except OSError as e:   # disk full, ...: one line (a replaced checkpoint is left as it was)
        raise UserError(f"cannot write checkpoint {ckpt_dir}: {e.strerror or e}") from None


def _replace_checkpoint(ckpt_dir: str, params, config: dict, assets: dict) -> str:
    from t5x_lite.checkpoints import save_params_checkpoint   # lazy: keeps `t5x-lite convert --help` fast
    # --overwrite: the old checkpoint is replaced only once the new one is complete (nothing is lost
    # when the save fails part-way); both sit in a fresh hidden sibling folder meanwhile.
    path = os.path.abspath(ckpt_dir)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.convert-", dir=os.path.dirname(path))
    new, old, done = os.path.join(staging, "new"), os.path.join(staging, "old"), False
    try:
        save_params_checkpoint(new, params, config, step=0)
        write_files(new, assets)
        os.rename(path, old)
        os.rename(new, path)
        done = True
    finally:
        if done or not os.path.exists(old):   # never delete the old checkpoint unless it was replaced
            shutil.rmtree(staging, ignore_errors=True)
    return os.path.join(path, "0")


def t5x_to_hf(ckpt_dir: str, hf_dir: str, step: int | None = None, overwrite: bool = False,
              vocabulary: str | None = None) -> str:
    """Write config.json, generation_config.json, model.safetensors and the tokenizer files of the
    checkpoint's (or `vocabulary`'s) SentencePiece model for a t5x_lite checkpoint (a checkpoint
    directory or a training workdir; step None = the latest)."""
    import jax
    import safetensors.numpy
    from flax import nnx

    from t5x_lite.loading import load_model, open_checkpoint   # lazy: keeps `t5x-lite convert --help` fast
    ck = open_checkpoint(ckpt_dir, step)
    hf_config = model_config_to_hf(ck.model_config)    # refuses what HF cannot represent, before reading params
    tokenizer = _tokenizer_files(ck.config, vocabulary, ck.model_config.vocab_size)
    loaded = load_model(ck.directory, ck.step, read_vocabulary=False)
    cfg = loaded.model_config
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(loaded.model, nnx.Param)))
    tensors = t5x_to_hf_tensors(params, cfg)
    _prepare_output(hf_dir, overwrite, is_checkpoint=False)
    # Each file is written whole (temporary name, then rename) with the user's umask: save_file would
    # leave a 0600 file, unreadable to the group that serves the model.
    files = {"model.safetensors": safetensors.numpy.save(tensors, metadata={"format": "pt"})}
    for name, obj in (("config.json", hf_config), ("generation_config.json", GENERATION_CONFIG)):
        files[name] = (jsonio.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    write_files(hf_dir, {**files, **tokenizer})
    for name in set(hf_tokenizer.TOKENIZER_FILES) - set(tokenizer):   # --overwrite: no stale tokenizer left
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(hf_dir, name))
    return hf_dir


def _tokenizer_files(config: dict, vocabulary: str | None, model_vocab_size: int) -> dict[str, bytes]:
    """The HF tokenizer files of the checkpoint's vocabulary; {} with one warning line when it has
    none or it is not a SentencePiece model (the model is exported all the same)."""
    try:
        vocab = checkpoint_vocabulary(config, vocabulary)
    except UserError as e:   # a moved or changed .model file: exporting the wrong tokenizer is worse than none
        raise UserError(f"cannot export the tokenizer: {e}") from None
    why = ("the checkpoint records no vocabulary" if vocab is None else
           None if isinstance(vocab, SentencePieceVocabulary) else f"its vocabulary {vocab!r} is not a SentencePiece model")
    if why:
        print(f"warning: {why}: no tokenizer files written (AutoTokenizer.from_pretrained will not load this "
              "export; pass --vocabulary spm:PATH to add one)", file=sys.stderr)
        return {}
    if vocab.vocab_size > model_vocab_size:
        raise UserError(f"vocabulary {vocab!r} has {vocab.vocab_size} ids but the model only {model_vocab_size} embeddings")
    return hf_tokenizer.tokenizer_files(vocab)


def write_files(directory: str, files: dict[str, bytes]) -> None:
    """Each file written whole (a temporary name, then rename) with the user's umask."""
    for name, data in files.items():
        tmp = os.path.join(directory, f".{name}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(directory, name))
        except OSError as e:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise UserError(f"cannot write {os.path.join(directory, name)}: {e.strerror or e}") from None


def _prepare_output(path: str, overwrite: bool, *, is_checkpoint: bool) -> bool:
    """Check (and create) an output directory; True when it holds a checkpoint to be replaced."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"output {path} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path):
        if not overwrite:
            raise UserError(f"output directory {path} is not empty (pass --overwrite to replace it)")
        if is_checkpoint:
            entries = os.listdir(path)
            if not all(e.split(".")[0].isdigit() or e == hf_tokenizer.SPIECE for e in entries):
                raise UserError(f"--overwrite refuses to delete {path}: it does not look like a checkpoint directory")
            return True
    ensure_dir(path, "--output")
    return False


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = ArgParser(
        prog="t5x-lite convert",
        description="Convert T5 checkpoints between Hugging Face (save_pretrained: config.json + "
                    "model.safetensors) and t5x_lite (Orbax) formats. Needs no torch.",
        epilog="examples:\n"
               "  t5x-lite convert hf-to-t5x --input ./t5-v1_1-small --output ./ckpt --vocabulary builtin\n"
               "  t5x-lite convert t5x-to-hf --input ./train_dir --output ./hf_export\n"
               "See docs/interop.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="direction", metavar="{hf-to-t5x,t5x-to-hf}", required=True, parser_class=ArgParser)
    a = sub.add_parser("hf-to-t5x", help="Hugging Face T5ForConditionalGeneration dir -> params-only checkpoint (step 0)",
                       description="Read HF_DIR/config.json + model.safetensors (T5.1.0 relu/tied, T5.1.1 "
                                   "gated-gelu/untied, ...) and write a t5x_lite checkpoint at step 0 that "
                                   "train (init_checkpoint), score, eval and infer read.")
    a.add_argument("--input", required=True, metavar="HF_DIR", help="directory written by save_pretrained")
    a.add_argument("--output", required=True, metavar="CKPT_DIR", help="new checkpoint directory")
    a.add_argument("--vocabulary", default=None, metavar="SPEC",
                   help="vocabulary spec stored with the checkpoint: builtin | byte | spm:PATH[:N] "
                        "(default: HF_DIR/spiece.model, copied into CKPT_DIR, with tokenizer_config.json's "
                        "extra_ids; without one, none: then score/infer need token ids)")
    a.add_argument("--scan-layers", action="store_true",
                   help="write the scanned layer layout (model.scan_layers=True) instead of layers_i")
    a.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in CKPT_DIR")
    b = sub.add_parser("t5x-to-hf", help="t5x_lite encoder-decoder checkpoint -> HF dir (model + tokenizer)",
                       description="Write config.json, generation_config.json and model.safetensors that "
                                   "transformers' T5ForConditionalGeneration.from_pretrained loads unchanged, and "
                                   "the tokenizer (spiece.model, tokenizer.json, tokenizer_config.json, "
                                   "special_tokens_map.json) that AutoTokenizer.from_pretrained loads.")
    b.add_argument("--input", required=True, metavar="CKPT_DIR", help="checkpoint directory or training workdir")
    b.add_argument("--output", required=True, metavar="HF_DIR", help="output directory")
    b.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    b.add_argument("--vocabulary", default=None, metavar="SPEC",
                   help="SentencePiece vocabulary of the tokenizer files, spm:PATH[:N] (default: the checkpoint's)")
    b.add_argument("--overwrite", action="store_true", help="overwrite files in a non-empty HF_DIR")
    for sub_parser in (a, b):
        sub_parser.add_argument("--no-progress", action="store_true",
                                help="accepted as by every long command (convert draws no progress bar)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.direction == "hf-to-t5x":
        out = hf_to_t5x(args.input, args.output, vocabulary=args.vocabulary, overwrite=args.overwrite,
                        scan_layers=args.scan_layers)
    else:
        out = t5x_to_hf(args.input, args.output, step=args.step, overwrite=args.overwrite, vocabulary=args.vocabulary)
    print(f"wrote {out}")
    return 0
