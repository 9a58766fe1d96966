"""`t5x-lite data ...` and `t5x-lite vocab ...`.

  t5x-lite data list [--json] [--module NAME ...]
  t5x-lite data inspect --task NAME [--split S] [--num N] [--json] [--inputs-length 128 --targets-length 32]
                        [--module NAME ...]
  t5x-lite data build-local ...        (t5x_lite.builders.local:main)
  t5x-lite vocab train --input GLOB [--input GLOB ...] --vocab-size N --model-type unigram|bpe --out PREFIX
                       [--no-byte-fallback]
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os
import sys

import numpy as np
import sentencepiece as spm

import t5x_lite.tasks  # noqa: F401  (registers the built-in tasks)
from t5x_lite.data.sources import read_documents
from t5x_lite.data.streams import MixtureStream
from t5x_lite.data.tasks import Mixture, MixtureRegistry, TaskRegistry, get_task_or_mixture
from t5x_lite import jsonio
from t5x_lite.errors import ArgParser, UserError, check_writable_file, import_modules
from t5x_lite.train import default_config

MODULE_HELP = "import this module first (it registers tasks/mixtures); repeatable"


def _data_parser() -> argparse.ArgumentParser:
    parser = ArgParser(prog="t5x-lite data", description="Inspect the task/mixture registry and the preprocessed "
                     "examples a task produces.", formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{list,inspect,build-local}", parser_class=ArgParser)
    p_list = sub.add_parser("list", help="list registered tasks and mixtures with a short description")
    p_list.add_argument("--json", action="store_true", help="one JSON object per line")
    p_list.add_argument("--module", action="append", default=[], metavar="NAME", help=MODULE_HELP)
    p_in = sub.add_parser("inspect", help="print preprocessed examples (token ids and decoded text), before packing",
                          description="Print examples of a task after preprocessing and before packing: token ids "
                          "and the decoded text of `inputs` and `targets`.")
    p_in.add_argument("--task", required=True, help="task or mixture name (see `t5x-lite data list`)")
    p_in.add_argument("--split", default="validation", help="split to read (default: validation)")
    p_in.add_argument("--num", type=int, default=3, help="number of examples (default: 3)")
    p_in.add_argument("--seed", type=int, default=0, help="seed for shuffling and random preprocessing")
    p_in.add_argument("--shuffle", action="store_true", help="shuffle documents (default: source order)")
    lengths = default_config.get_config().data.feature_lengths   # what `t5x-lite train` trains on by default
    p_in.add_argument("--inputs-length", type=int, default=int(lengths.inputs),
                      help=f"feature length of inputs (default {lengths.inputs}, as the default training run)")
    p_in.add_argument("--targets-length", type=int, default=int(lengths.targets),
                      help=f"feature length of targets (default {lengths.targets}, as the default training run)")
    p_in.add_argument("--data-dir", default=None, help="TFDS data_dir for TFDS-backed tasks (c4_v220_*)")
    p_in.add_argument("--json", action="store_true",
                      help="one JSON object per line: inputs, targets (id lists), inputs_pretty, targets_pretty")
    p_in.add_argument("--module", action="append", default=[], metavar="NAME", help=MODULE_HELP)
    sub.add_parser("build-local", help="build the local downstream datasets (see `t5x-lite data build-local --help`; "
                                       "--no-progress: no TFDS progress bars)",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "build-local":
        from t5x_lite.builders import local   # lazy: keeps `data list` / `data inspect` fast (no tfds, no builders)
        if "--no-progress" in argv:   # TFDS draws the bars while it writes each dataset
            import tensorflow_datasets as tfds
            tfds.disable_progress_bar()
            argv = [a for a in argv if a != "--no-progress"]
        return local.main(argv[1:])
    parser = _data_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    import_modules(args.module)
    if args.command == "list":
        return _list(args)
    return _inspect(args)


def _list(args) -> int:
    rows = [("task", n, TaskRegistry.get(n).description) for n in TaskRegistry.names()]
    rows += [("mixture", n, MixtureRegistry.get(n).description) for n in MixtureRegistry.names()]
    if args.json:
        for kind, name, desc in rows:
            print(jsonio.dumps({"kind": kind, "name": name, "description": desc}))
        return 0
    width = max(len(n) for _, n, _ in rows)
    for kind, name, desc in rows:
        print(f"{name:<{width}}  {kind:<7}  {desc}")
    return 0


def _inspect(args) -> int:
    if args.num <= 0:
        raise UserError(f"--num must be positive, got {args.num}")
    provider = get_task_or_mixture(args.task)
    lengths = {"inputs": args.inputs_length, "targets": args.targets_length}
    tasks = provider.tasks_and_rates if isinstance(provider, Mixture) else [(provider, 1.0)]
    streams = [t.with_data_dir(args.data_dir).get_examples(args.split, seed=args.seed + i, shuffle=args.shuffle,
                                                           feature_lengths=lengths, num_epochs=1)
               for i, (t, _) in enumerate(tasks)]
    task = tasks[0][0]
    if len(streams) == 1:
        examples = streams[0]
    else:
        examples = MixtureStream(streams, [r for _, r in tasks], args.seed)
    vocabs = {k: f.vocabulary for k, f in task.output_features.items()}
    for n, ex in enumerate(itertools.islice(examples, args.num)):
        record = {}
        for key in ("inputs", "targets"):
            if key in ex:
                ids = [int(i) for i in np.asarray(ex[key]).reshape(-1)]
                record[key] = ids
                record[f"{key}_pretty"] = _pretty(vocabs[key], ids)
        if args.json:
            print(jsonio.dumps(record, ensure_ascii=False))
        else:
            print(f"=== example {n} ({provider.name}, {args.split})")
            for key in ("inputs", "targets"):
                if key in record:
                    print(f"{key} ({len(record[key])} ids): {record[key]}")
                    print(f"{key}_pretty: {record[key + '_pretty']}")
    return 0


def _pretty(vocab, ids: list[int]) -> str:
    """Decoded text that also shows EOS (decode() stops at it)."""
    if ids and ids[-1] == vocab.eos_id and vocab.eos_id not in ids[:-1]:
        return vocab.decode(ids[:-1]) + "</s>"
    return vocab.decode(ids)


# ------------------------------------------------------------------------------------------------
# t5x-lite vocab train
# ------------------------------------------------------------------------------------------------
def _vocab_parser() -> argparse.ArgumentParser:
    parser = ArgParser(prog="t5x-lite vocab", description="Train a SentencePiece vocabulary with T5 conventions "
                     "(pad=0, eos=1, unk=2, no BOS).  Use it with vocabulary spec 'spm:PREFIX.model' (100 extra "
                     "ids are added on top, so vocab_size = pieces + 100).")
    sub = parser.add_subparsers(dest="command", metavar="{train}", parser_class=ArgParser)
    p = sub.add_parser("train", help="train a SentencePiece model (unigram or bpe) on text files",
                       description="Train a SentencePiece model on text files (one sentence/document per line; "
                       ".gz/.xz read transparently).  Writes PREFIX.model and PREFIX.vocab.")
    p.add_argument("--input", action="append", required=True, metavar="GLOB",
                   help="text file(s) or glob(s); repeat the flag for several")
    p.add_argument("--vocab-size", type=int, required=True, help="number of pieces including pad/eos/unk")
    p.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram", help="default: unigram")
    p.add_argument("--out", required=True, metavar="PREFIX", help="output prefix (PREFIX.model, PREFIX.vocab)")
    p.add_argument("--character-coverage", type=float, default=0.9995, help="default 0.9995 (1.0 for small alphabets)")
    p.add_argument("--max-sentences", type=int, default=2_000_000, help="sample at most this many lines")
    p.add_argument("--seed", type=int, default=0, help="seed of SentencePiece's sentence sampling (default 0)")
    p.add_argument("--byte-fallback", action=argparse.BooleanOptionalAction, default=True,
                   help="characters missing from the vocabulary become their UTF-8 bytes (256 pieces <0x00>.."
                   "<0xFF>, counted in --vocab-size) instead of <unk>, so any text round-trips (default: on; "
                   "needs --vocab-size >= 260)")
    return parser


def vocab_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _vocab_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return train_vocabulary(args.input, args.vocab_size, args.model_type, args.out,
                            character_coverage=args.character_coverage, max_sentences=args.max_sentences,
                            seed=args.seed, byte_fallback=args.byte_fallback)


def train_vocabulary(patterns, vocab_size: int, model_type: str, out_prefix: str, *,
                     character_coverage: float = 0.9995, max_sentences: int = 2_000_000, seed: int = 0,
                     byte_fallback: bool = True) -> int:
    for ext in (".model", ".vocab"):   # before any work: the outputs can be written
        check_writable_file(out_prefix + ext, "--out")
    files = []
    for pattern in patterns:
        matched = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matched:
            raise UserError(f"no file matches --input {pattern!r}")
        folders = [m for m in matched if os.path.isdir(m)]
        if folders:
            raise UserError(f"--input {pattern!r} matches the directory {folders[0]}; give text files "
                            f"(e.g. --input '{os.path.join(folders[0], '*.txt')}')")
        files.extend(matched)
    lines = read_documents(files)
    if not lines:
        raise UserError(f"the input files {files} contain no text")
    if vocab_size < 4:
        raise UserError(f"--vocab-size must be at least 4 (pad, eos, unk + one piece), got {vocab_size}")
    if byte_fallback and vocab_size < 3 + 256 + 1:
        raise UserError(f"--vocab-size {vocab_size} is too small for --byte-fallback (pad, eos, unk and 256 byte "
                        "pieces are included): use at least 260 or --no-byte-fallback")
    # Trained under a temporary prefix and renamed into place: an existing PREFIX.model stays intact
    # unless training succeeds.
    tmp_prefix = f"{out_prefix}.tmp{os.getpid()}"
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=tmp_prefix, vocab_size=vocab_size, model_type=model_type,
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=character_coverage,
            input_sentence_size=max_sentences, shuffle_input_sentence=True, max_sentence_length=1 << 16,
            byte_fallback=byte_fallback, minloglevel=2, hard_vocab_limit=True)
        for ext in (".model", ".vocab"):
            os.replace(tmp_prefix + ext, out_prefix + ext)
    except (RuntimeError, OSError) as e:   # e.g. "Vocabulary size too high (N). Please set it to a value <= M."
        why = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        why = why.split("] ", 1)[-1] if why.startswith("INTERNAL:") else why   # drop "INTERNAL: file.cc(744) [check]"
        raise UserError(f"SentencePiece training failed: {why}") from None
    finally:   # nothing left behind when training fails
        for ext in (".model", ".vocab"):
            if os.path.exists(tmp_prefix + ext):
                os.remove(tmp_prefix + ext)
    print(f"wrote {out_prefix}.model and {out_prefix}.vocab ({model_type}, {vocab_size} pieces"
          f"{' incl. 256 byte-fallback pieces' if byte_fallback else ''}; "
          f"use vocabulary 'spm:{out_prefix}.model' -> vocab_size {vocab_size + 100})")
    return 0
