"""`t5x-lite score`: log-likelihood of targets given inputs, from a checkpoint.

    t5x-lite score --checkpoint CKPT_DIR --input in.jsonl --output out.jsonl [--batch-size 16]

CKPT_DIR is a checkpoint directory or a training workdir, loaded by t5x_lite.loading.load_model;
scoring runs inside partitioning.activate(mesh) of the mesh the params were placed on.

Each input line is a JSON object with "targets" (and "inputs"; optional for
decoder-only models), each either a string or a list of token ids:
- a string is tokenised with the checkpoint's vocabulary (config["vocabulary"],
  or --vocabulary) and gets EOS (id 1) appended, as T5 tasks do;
- a list of ids is used exactly as given (no EOS added).
Each output line is the input object plus
    "log_likelihood":  sum over target tokens of log p(token | inputs, earlier targets)  (natural log)
    "token_log_probs": the per-token terms, one per target token (EOS included when appended)
    "target_ids":      the tokenised targets (only when "targets" was a string).
Architectures:
- encoder_decoder: inputs -> encoder; targets are teacher-forced through the
  decoder (decoder input = targets shifted right with BOS 0), as T5X's score_batch.
- decoder_only: the sequence is inputs + targets; only the targets are scored.
  A prefix LM (decoder_mask="prefix") sees the inputs (plus the BOS position)
  with full attention, as seqio's PrefixLMFeatureConverter.
- encoder_only: not supported (an MLM does not define a sequence likelihood).
Rows are batched (--batch-size) in length order and padded to power-of-two
length buckets, so the jitted scorer compiles once per bucket pair, not once
per line; the output keeps the input order.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

from t5x_lite.data.sources import iter_jsonl
from t5x_lite.data.vocabularies import EOS_ID
from t5x_lite import jsonio
from t5x_lite.errors import ArgParser, UserError, check_writable_file, import_modules

MIN_BUCKET = 8


def bucket_length(n: int, cap: int | None = None) -> int:
    """Smallest power of two >= n (at least MIN_BUCKET), capped at `cap` if given."""
    b = max(MIN_BUCKET, 1 << max(0, int(n) - 1).bit_length())
    return min(b, cap) if cap else b


class Scorer:
    """Jitted, batched teacher-forced scoring of (input ids, target ids) pairs."""

    def __init__(self, cfg, model, batch_size: int = 16):
        """Call `score` inside partitioning.activate(mesh) of the mesh the model's params live on."""
        import jax
        import jax.numpy as jnp
        from flax import nnx
        from t5x_lite.models import model_logits   # lazy: keeps `t5x-lite score --help` fast (no JAX)
        if cfg.architecture not in ("encoder_decoder", "decoder_only"):
            raise UserError(f"score supports encoder_decoder and decoder_only models; this checkpoint is "
                            f"{cfg.architecture}")
        if batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {batch_size}")
        self.cfg, self.batch_size = cfg, int(batch_size)
        self.max_len = int(cfg.max_position_embeddings) if cfg.position_embedding == "learned" else None
        graphdef, self._state = nnx.split(model)

        def token_log_probs(state, batch):
            logits = model_logits(nnx.merge(graphdef, state), batch)            # [B, L, V]
            logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
            return jnp.take_along_axis(logp, batch["decoder_target_tokens"][..., None], axis=-1)[..., 0]

        self._fn = jax.jit(token_log_probs)

    def check(self, inputs: list[int], targets: list[int], where: str) -> None:
        v = self.cfg.vocab_size
        for name, ids in (("inputs", inputs), ("targets", targets)):
            bad = [t for t in ids if not 0 <= t < v]
            if bad:
                raise UserError(f"{where}: {name} has token id {bad[0]} outside [0, {v}) (model vocab_size {v})")
        if not targets:
            raise UserError(f"{where}: targets is empty")
        if self.cfg.architecture == "encoder_decoder" and not inputs:
            raise UserError(f"{where}: inputs is empty (an encoder-decoder model needs inputs)")
        if 0 in targets:
            raise UserError(f"{where}: targets contain the padding id 0")
        if self.max_len is None:
            return
        if self.cfg.architecture == "decoder_only":
            longest = ("inputs + targets", len(inputs) + len(targets))
        else:
            longest = max(("inputs", len(inputs)), ("targets", len(targets)), key=lambda kv: kv[1])
        if longest[1] > self.max_len:
            raise UserError(f"{where}: {longest[0]} of {longest[1]} tokens exceed the model's "
                            f"max_position_embeddings {self.max_len} (learned positions)")

    def _batch(self, rows: list[tuple[list[int], list[int]]]) -> tuple[dict, list[tuple[int, int]]]:
        """Model features for `rows`, padded to batch_size rows and bucketed lengths; plus where each
        row's targets sit ([start, stop) in the target axis)."""
        b = self.batch_size
        rows = rows + [rows[0]] * (b - len(rows))     # filler rows repeat a real one (no all-pad rows)
        if self.cfg.architecture == "encoder_decoder":
            lin = bucket_length(max(len(i) for i, _ in rows), self.max_len)
            lt = bucket_length(max(len(t) for _, t in rows), self.max_len)
            enc = np.zeros((b, lin), np.int32)
            tgt = np.zeros((b, lt), np.int32)
            for r, (i, t) in enumerate(rows):
                enc[r, :len(i)] = i
                tgt[r, :len(t)] = t
            spans = [(0, len(t)) for _, t in rows]
            batch = {"encoder_input_tokens": enc, "decoder_target_tokens": tgt}
        else:
            lt = bucket_length(max(len(i) + len(t) for i, t in rows), self.max_len)
            tgt = np.zeros((b, lt), np.int32)
            causal = np.zeros((b, lt), np.int32)
            for r, (i, t) in enumerate(rows):
                tgt[r, :len(i) + len(t)] = list(i) + list(t)
                causal[r, :len(i) + 1] = 1           # inputs + the BOS position see each other (prefix LM)
            spans = [(len(i), len(i) + len(t)) for i, t in rows]
            batch = {"decoder_target_tokens": tgt}
            if self.cfg.decoder_mask == "prefix":
                batch["decoder_causal_attention"] = causal
        dec_in = np.zeros_like(tgt)
        dec_in[:, 1:] = tgt[:, :-1]                   # shift right, BOS = 0
        batch["decoder_input_tokens"] = dec_in
        weights = np.zeros(tgt.shape, np.float32)
        for r, (s, e) in enumerate(spans):
            weights[r, s:e] = 1.0
        batch["decoder_loss_weights"] = weights
        return batch, spans

    def score(self, rows: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        """Per-token log-probs of each row's targets (at most batch_size rows)."""
        batch, spans = self._batch(rows)
        out = np.asarray(self._fn(self._state, batch))
        return [out[r, s:e].astype(np.float64).tolist() for r, (s, e) in enumerate(spans[:len(rows)])]


def _ids(value, name: str, vocab, where: str) -> tuple[list[int], bool]:
    """(token ids, was_string).  Strings get EOS appended; id lists are used as given."""
    if isinstance(value, str):
        if vocab is None:
            raise UserError(f"{where}: {name} is a string but the checkpoint has no vocabulary "
                            "(pass --vocabulary SPEC, or give token ids)")
        return list(vocab.encode(value)) + [EOS_ID], True
    if isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return [int(t) for t in value], False
    raise UserError(f"{where}: {name} must be a string or a list of integer token ids, got {type(value).__name__}")


def read_examples(path: str, scorer: Scorer, vocab) -> list[tuple[dict, list[int], list[int], bool]]:
    examples = []
    for n, obj in iter_jsonl(path):
        where = f"{path} line {n}"
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected a JSON object with 'inputs' and 'targets'")
        if "targets" not in obj:
            raise UserError(f"{where}: missing 'targets'")
        if "inputs" not in obj and scorer.cfg.architecture == "encoder_decoder":
            raise UserError(f"{where}: missing 'inputs' (needed by an encoder-decoder model)")
        inputs, _ = _ids(obj.get("inputs", []), "inputs", vocab, where)
        targets, tgt_str = _ids(obj["targets"], "targets", vocab, where)
        scorer.check(inputs, targets, where)
        examples.append((obj, inputs, targets, tgt_str))
    if not examples:
        raise UserError(f"{path} has no examples")
    return examples


def score_file(checkpoint: str, input_path: str, output_path: str, *, batch_size: int = 16,
               step: int | None = None, vocabulary: str | None = None, progress: bool = True) -> int:
    """Score every line of `input_path` into `output_path` (written atomically). Returns the line count."""
    from t5x_lite import loading, partitioning   # lazy: keeps `t5x-lite score --help` fast (no JAX)
    check_writable_file(output_path, "--output")   # before the model is loaded
    loaded = loading.load_model(checkpoint, step, vocabulary=vocabulary)
    cfg, vocab = loaded.model_config, loaded.vocabulary
    scorer = Scorer(cfg, loaded.model, batch_size)
    examples = read_examples(input_path, scorer, vocab)
    from tqdm import tqdm
    tmp = output_path + ".tmp"
    # Batches are formed in length order (fewer padded tokens, fewer distinct bucket shapes to compile);
    # the output keeps the input order.
    if cfg.architecture == "decoder_only":
        order = sorted(range(len(examples)), key=lambda k: len(examples[k][1]) + len(examples[k][2]))
    else:
        order = sorted(range(len(examples)), key=lambda k: (len(examples[k][1]), len(examples[k][2])))
    scores: list = [None] * len(examples)
    with tqdm(total=len(examples), desc="score", unit="ex", file=sys.stderr, disable=not progress) as bar, \
            partitioning.activate(loaded.mesh):
        for start in range(0, len(order), scorer.batch_size):
            idx = order[start:start + scorer.batch_size]
            for k, lp in zip(idx, scorer.score([(examples[k][1], examples[k][2]) for k in idx])):
                scores[k] = lp
            bar.update(len(idx))
    nonfinite = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for (obj, _, targets, tgt_str), lp in zip(examples, scores):
            rec = dict(obj)
            rec["log_likelihood"] = math.fsum(lp) if all(map(math.isfinite, lp)) else math.nan
            rec["token_log_probs"] = lp
            if tgt_str:
                rec["target_ids"] = targets
            nonfinite += not math.isfinite(rec["log_likelihood"])
            # No NaN literal in the file: a non-finite score is null, named under "nonfinite".
            f.write(jsonio.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, output_path)
    if nonfinite:
        print(f"warning: {nonfinite} of {len(examples)} examples have non-finite scores (written as null, "
              "listed under \"nonfinite\"): the checkpoint's params may be damaged", file=sys.stderr)
    return len(examples)


def main(argv: list[str] | None = None) -> int:
    p = ArgParser(
        prog="t5x-lite score",
        description="Log-likelihood of targets given inputs under a checkpoint (encoder_decoder or "
                    "decoder_only). Reads JSONL lines {\"inputs\": ..., \"targets\": ...} (strings, tokenised "
                    "with the checkpoint's vocabulary plus EOS, or lists of token ids used as given) and writes "
                    "each line back with \"log_likelihood\" (natural log, summed over target tokens) and "
                    "\"token_log_probs\".",
        epilog="example:\n  t5x-lite score --checkpoint ./ckpt --input pairs.jsonl --output scored.jsonl\n"
               "See docs/interop.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint directory or training workdir")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--input", required=True, metavar="FILE.jsonl", help="one JSON object per line")
    p.add_argument("--output", required=True, metavar="OUT.jsonl", help="written once all lines are scored")
    p.add_argument("--batch-size", type=int, default=16, help="rows per jitted call (default 16)")
    p.add_argument("--vocabulary", default=None, metavar="SPEC",
                   help="vocabulary for string inputs/targets (default: the checkpoint's): builtin | byte | spm:PATH[:N]")
    p.add_argument("--module", action="append", default=[], metavar="NAME",
                   help="import this module first (e.g. one that registers a vocabulary or tasks; repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    import_modules(args.module)
    n = score_file(args.checkpoint, args.input, args.output, batch_size=args.batch_size, step=args.step,
                   vocabulary=args.vocabulary, progress=not args.no_progress)
    print(f"scored {n} examples -> {args.output}")
    return 0
