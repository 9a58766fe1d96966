"""`t5x-lite eval` and `t5x-lite infer`.

Both load the checkpoint with t5x_lite.loading.load_model (a checkpoint dir or a training
workdir, --step or the latest) and decode inside partitioning.activate(mesh) of the mesh the
params were placed on.  --module NAME imports a module of yours that registers tasks first.

eval:  decode a task's split with a checkpoint and score it with the task's
       postprocessor and metrics; writes OUTPUT/<task>/predictions.jsonl
       (inputs, targets, prediction) and OUTPUT/<task>/metrics.json.
       With --num-shots K (decoder-only checkpoints) the prompts are K-shot
       in-context prompts built from the task's train split (evaluation/fewshot.py).
infer: free-form generation from a JSONL file (or stdin, --input -); each line
       {"inputs": "text" or [ids], ...} comes back (to a file, or stdout with --output -) with
       "prediction" (text, when a vocabulary is known), "prediction_ids" and "score" (their summed
       log-prob); with --num-return-sequences N > 1 also "predictions", N such objects.
Both draw a tqdm bar on stderr (--no-progress: none).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from t5x_lite.data.sources import iter_jsonl
from t5x_lite.data.vocabularies import EOS_ID
from t5x_lite import jsonio
from t5x_lite.errors import ArgParser, UserError, check_writable_file, ensure_dir, import_modules


def _checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint directory or training workdir (t5x-lite train/convert output)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--module", action="append", default=[], metavar="NAME",
                   help="import this module first, e.g. one that registers your tasks (repeatable)")


def _decode_args(p: argparse.ArgumentParser, methods=("greedy", "beam")) -> None:
    g = p.add_argument_group("decoding")
    g.add_argument("--decode", choices=methods, default="greedy",
                   help="greedy (the T5 paper's choice) or beam search%s (default: greedy)" %
                   (" or sampling" if "sample" in methods else ""))
    g.add_argument("--beam-size", type=int, default=4, help="beams for --decode beam (default 4)")
    g.add_argument("--alpha", type=float, default=0.6,
                   help="T5X brevity penalty ((5+len)/6)^alpha for beam search (default 0.6; 0 = plain log-prob)")
    g.add_argument("--beam-rule", choices=("t5x", "hf"), default="t5x",
                   help="beam bookkeeping: t5x (default) or hf (reproduces transformers' generate; with "
                        "--alpha 0 equals its length_penalty=0.0), see docs/evaluation.md")
    g.add_argument("--max-decode-length", type=int, default=None,
                   help="most new tokens per example (eval default: longest target; infer default: 64)")
    g.add_argument("--batch-size", type=int, default=32, help="examples decoded together (default 32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr)")


# ----------------------------------------------------------------------------------------------
# eval
# ----------------------------------------------------------------------------------------------

def eval_main(argv: list[str]) -> int:
    p = ArgParser(prog="t5x-lite eval", description="Decode a task split with a checkpoint and compute the task's "
                  "metrics. Writes OUTPUT/<task>/predictions.jsonl and OUTPUT/<task>/metrics.json.")
    _checkpoint_args(p)
    p.add_argument("--task", required=True, help="task or mixture name(s), comma separated (see t5x-lite data list)")
    p.add_argument("--split", default="validation", help="split to evaluate (default: validation)")
    p.add_argument("--max-examples", type=int, default=None, help="evaluate only the first N examples")
    p.add_argument("--num-shots", type=int, default=0,
                   help="K-shot in-context prompts from the train split (decoder-only checkpoints; default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed for choosing few-shot examples")
    p.add_argument("--inputs-length", type=int, default=None,
                   help="trim inputs to N tokens as in training (default: the checkpoint's "
                        "data.feature_lengths.inputs, else 512)")
    p.add_argument("--output", required=True, help="output directory")
    _decode_args(p)
    args = p.parse_args(argv)
    if args.max_examples is not None and args.max_examples < 1:
        raise UserError("--max-examples must be >= 1")
    if args.num_shots < 0:
        raise UserError("--num-shots must be >= 0")
    ensure_dir(args.output, "--output")   # before the checkpoint is loaded and anything decoded
    import_modules(args.module)

    from t5x_lite import loading, partitioning   # lazy: keeps `t5x-lite eval --help` fast (no JAX)
    from t5x_lite.evaluation import evaluator as ev, fewshot   # lazy: keeps `t5x-lite eval --help` fast (no JAX)
    settings = ev.DecodeSettings(method=args.decode, beam_size=args.beam_size, alpha=args.alpha,
                                 max_decode_length=args.max_decode_length, batch_size=args.batch_size,
                                 finish_rule=args.beam_rule).validate()
    tasks = ev.resolve_tasks(args.task)
    # The tasks decode with their own vocabularies; reading the checkpoint's still refuses a changed file.
    loaded = loading.load_model(args.checkpoint, args.step)
    model, config = loaded.model, loaded.config
    arch = loaded.model_config.architecture
    inputs_length = args.inputs_length
    if inputs_length is None:
        inputs_length = int(((config.get("data") or {}).get("feature_lengths") or {}).get("inputs") or 512)
    if inputs_length < 2:
        raise UserError("--inputs-length must be >= 2")
    if args.num_shots and arch != "decoder_only":
        raise UserError(f"--num-shots needs a decoder_only checkpoint; this one is {arch}")
    for task in tasks:
        t0 = time.time()
        with partitioning.activate(loaded.mesh):
            if args.num_shots:
                records, metrics = fewshot.evaluate_fewshot(
                    model, task, num_shots=args.num_shots, split=args.split, max_examples=args.max_examples,
                    settings=settings, seed=args.seed, progress=not args.no_progress and task.name,
                    inputs_length=inputs_length)
            else:
                if arch == "decoder_only" and not task.name.endswith(ev.LM_FORMAT_SUFFIX):
                    print(f"note: decoder-only checkpoint on {task.name}: prompts are the task inputs as is "
                          f"(fine-tuned with configs/finetune_*? use {task.name}{ev.LM_FORMAT_SUFFIX})",
                          file=sys.stderr)
                records, metrics = ev.evaluate_task(model, task, split=args.split, max_examples=args.max_examples,
                                                    settings=settings, progress=not args.no_progress and task.name,
                                                    inputs_length=inputs_length)
        decode = "argmax class (classifier)" if ev.classify.is_classifier(loaded.model_config) else args.decode
        extra = {"num_examples": len(records), "split": args.split, "decode": decode,
                 "checkpoint": os.path.abspath(args.checkpoint), "step": loaded.step, "num_shots": args.num_shots,
                 "seconds": round(time.time() - t0, 2)}
        if decode == "beam":
            extra.update(beam_size=args.beam_size, alpha=args.alpha, beam_rule=args.beam_rule)
        out = ev.write_results(args.output, task.name, records, metrics, extra)
        shown = ", ".join(f"{k}={v:.2f}" for k, v in metrics.items())
        print(f"{task.name} ({len(records)} examples): {shown}  -> {out}")
    return 0


# ----------------------------------------------------------------------------------------------
# infer
# ----------------------------------------------------------------------------------------------

def _stdin_jsonl():
    """(line number, parsed value) for each non-blank line of stdin, as data.sources.iter_jsonl for files."""
    for n, line in enumerate(sys.stdin, 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"<stdin>:{n}: invalid JSON ({e.msg})") from None


def _read_jsonl(path: str) -> list[dict]:
    rows, name = [], "<stdin>" if path == "-" else path
    for n, row in _stdin_jsonl() if path == "-" else iter_jsonl(path):
        if not isinstance(row, dict) or "inputs" not in row:
            raise UserError(f'{name}:{n}: each line must be an object with an "inputs" field')
        rows.append(row)
    if not rows:
        raise UserError(f"{name} has no input lines")
    return rows


def _prompts(rows: list[dict], cfg, vocab, add_eos: bool) -> list[list[int]]:
    from t5x_lite.decoding import fit_decode_length   # lazy: keeps `t5x-lite infer --help` fast (no JAX)
    prompts = []
    for n, row in enumerate(rows, 1):
        x = row["inputs"]
        if isinstance(x, str):
            if vocab is None:
                raise UserError(f"line {n}: text inputs need a vocabulary, and the checkpoint has none "
                                "(pass --vocabulary or give token ids)")
            ids = vocab.encode(x) + ([EOS_ID] if add_eos else [])
        elif isinstance(x, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in x):
            ids = list(x)
        else:
            raise UserError(f"line {n}: inputs must be a string or a list of integer token ids")
        bad = [i for i in ids if not 0 <= i < cfg.vocab_size]
        if bad:
            raise UserError(f"line {n}: token id {bad[0]} out of range [0, {cfg.vocab_size})")
        if cfg.architecture == "encoder_decoder" and not ids:
            raise UserError(f"line {n}: empty inputs")
        try:
            fit_decode_length(cfg, len(ids), 1)
        except UserError as e:
            raise UserError(f"line {n}: {e}") from None
        prompts.append(ids)
    return prompts


def infer_main(argv: list[str]) -> int:
    p = ArgParser(prog="t5x-lite infer", description="Free-form generation from a checkpoint. Each input line is "
                  'a JSON object with "inputs": a string (tokenized with the checkpoint\'s vocabulary) or a list '
                  'of token ids; each output line adds "prediction" (text, when a vocabulary is known), '
                  '"prediction_ids" and "score" (the summed log-prob of prediction_ids), and with '
                  '--num-return-sequences N > 1 "predictions": N objects with these three fields.')
    _checkpoint_args(p)
    p.add_argument("--input", required=True, help="input JSONL ('-': stdin)")
    p.add_argument("--output", required=True, help="output JSONL ('-': stdout; messages go to stderr)")
    p.add_argument("--vocabulary", default=None,
                   help="vocabulary spec (builtin, byte, spm:PATH[:N]); default: the checkpoint's")
    p.add_argument("--add-eos", choices=("auto", "yes", "no"), default="auto",
                   help="append EOS to text inputs (auto: yes for encoder-decoder, as T5 tasks do; no for "
                        "decoder-only, whose prompt is continued)")
    _decode_args(p, methods=("greedy", "beam", "sample"))
    p.add_argument("--num-return-sequences", type=int, default=1, metavar="N",
                   help="answers per input: the N best of the beams (--decode beam, N <= --beam-size) or N "
                        "samples (--decode sample); default 1")
    g = p.add_argument_group("sampling (--decode sample)")
    g.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (0 = greedy)")
    g.add_argument("--top-k", type=int, default=0, help="sample among the K most likely tokens (0 = all)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = all)")
    g.add_argument("--seed", type=int, default=0, help="PRNG seed (same seed, same output)")
    args = p.parse_args(argv)
    max_len = 64 if args.max_decode_length is None else args.max_decode_length
    if args.temperature < 0 or not 0 < args.top_p <= 1 or args.top_k < 0:
        raise UserError("need --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0")
    if max_len < 1:
        raise UserError(f"--max-decode-length must be >= 1, got {max_len}")
    n = args.num_return_sequences
    if n < 1 or (n > 1 and args.decode == "greedy") or (args.decode == "beam" and n > args.beam_size):
        raise UserError(f"--num-return-sequences {n}: needs 1 <= N, --decode beam (N <= --beam-size) or sample "
                        "for N > 1")
    to_stdout = args.output == "-"
    if not to_stdout:
        check_writable_file(args.output, "--output")   # before the checkpoint is loaded and anything decoded
    import_modules(args.module)
    rows = _read_jsonl(args.input)

    from t5x_lite import loading, partitioning   # lazy: keeps `t5x-lite infer --help` fast (no JAX)
    from t5x_lite.evaluation import classify, evaluator as ev   # lazy: keeps `t5x-lite infer --help` fast (no JAX)
    settings = ev.DecodeSettings(method=args.decode, beam_size=args.beam_size, alpha=args.alpha,
                                 batch_size=args.batch_size, temperature=args.temperature, top_k=args.top_k,
                                 top_p=args.top_p, seed=args.seed, finish_rule=args.beam_rule).validate()
    loaded = loading.load_model(args.checkpoint, args.step, vocabulary=args.vocabulary)
    cfg, vocab = loaded.model_config, loaded.vocabulary
    if classify.is_classifier(cfg):   # encoder classifiers print label names (evaluation/classify.py)
        return classify.infer(loaded, rows, args.output, batch_size=args.batch_size, progress=not args.no_progress)
    add_eos = args.add_eos == "yes" or (args.add_eos == "auto" and cfg.architecture == "encoder_decoder")
    prompts = _prompts(rows, cfg, vocab, add_eos)
    from t5x_lite import decoding   # lazy: keeps `t5x-lite infer --help` fast (no JAX)
    with partitioning.activate(loaded.mesh):
        answers = decoding.generate(
            loaded.model, prompts, max_decode_length=max_len, num_return_sequences=n, method=settings.method,
            batch_size=settings.batch_size, seed=settings.seed, beam_size=settings.beam_size, alpha=settings.alpha,
            temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
            finish_rule=settings.finish_rule, progress=not args.no_progress and "infer")

    def answer(g) -> dict:
        text = {"prediction": vocab.decode(g.ids)} if vocab is not None else {}
        return {**text, "prediction_ids": g.ids, "score": g.log_prob}

    lines = []
    for row, gens in zip(rows, answers):
        out = {**row, **answer(gens[0])}           # the best beam, or the first sample
        if n > 1:
            out["predictions"] = [answer(g) for g in gens]
        lines.append(jsonio.dumps(out, ensure_ascii=False) + "\n")
    if to_stdout:
        sys.stdout.writelines(lines)
        sys.stdout.flush()
    else:
        tmp = args.output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(tmp, args.output)
    print(f"wrote {len(rows)} predictions to {'stdout' if to_stdout else args.output}",
          file=sys.stderr if to_stdout else sys.stdout)
    return 0
