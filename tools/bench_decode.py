"""Decoding and scoring throughput of t5x_lite, optionally against Hugging Face `generate` / forward.

    python tools/bench_decode.py --vs-hf                      # greedy + beam-4, T5.1.1-small, batch 8, 512 -> 64
    python tools/bench_decode.py --vs-hf --methods greedy --batch 1 --new-tokens 4 --reps 1
    python tools/bench_decode.py --vs-hf --score --targets 128   # teacher-forced log-likelihood, examples/s

The model is the config's (default configs/t5_1_1.py:small, an encoder-decoder) at random init
(--seed).  With --vs-hf the SAME weights run on both sides: the t5x_lite params are saved as a
params-only checkpoint and exported with the project's converter (t5x_lite.convert.t5x_to_hf,
i.e. `t5x-lite convert t5x-to-hf`) to a temporary directory that a persistent worker
(tools/hf_worker.py, under this Python or $HF_PYTHON) loads with
T5ForConditionalGeneration.from_pretrained.  Inputs are random token ids (no padding), the same
on both sides.  Repetitions are INTERLEAVED in one run (t5x_lite greedy, HF greedy, t5x_lite beam,
HF beam, ...) after --warmup untimed rounds; the headlines are the ratios of the MEDIANS
(t5x_lite / HF speed, > 1 = t5x_lite faster), then the device, a load WARNING when other
processes used the CPUs (tools/benchlib.py), and each side's rate.

Decoding (tokens/s = batch x --new-tokens / seconds of one batched generate call, beam search
counting the returned best beam's tokens): both sides generate EXACTLY --new-tokens tokens per row.
HF gets min_new_tokens = max_new_tokens = N, which masks EOS (logit -inf) until N tokens exist, so
no row stops early.  t5x_lite's loops (t5x_lite/decoding.py) stop once every row has emitted EOS
(beam search: once no live beam can beat the finished ones), so this tool runs the same public
pieces `decoding.decode` runs (models.init_decode_state / models.decode_step under nnx.jit, then
decoding.greedy_search / decoding.beam_search) with the same EOS mask on the logits (EOS can never
be chosen) and eos_id=-1 (nothing ever finishes): N steps on both sides, and greedy outputs
comparable token for token.  Beam search uses beam size --beam-size on both sides (t5x_lite:
alpha 0.6, which cannot reorder beams that all have length N).  A sanity line says whether the
greedy (and beam) outputs agree token for token; on identical weights they should in float32 (up to
float ties); in bfloat16 the two libraries round differently and may part after a few tokens.

--score: scoring throughput (examples/s = batch / seconds of one call): t5x_lite's
scoring.Scorer (what `t5x-lite score` runs: jitted teacher-forced log-softmax + gather; it pads
lengths to power-of-two buckets) vs HF forward with labels + log-softmax + gather; a sanity line
gives the largest difference between the two sides' per-example log-likelihoods.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from bench_train import load_config, resolve_model  # noqa: E402
from benchlib import fail  # noqa: E402


@functools.cache
def _generate_fn():
    from flax import nnx

    from t5x_lite import decoding
    from t5x_lite.models import decode_step, init_decode_state
    from t5x_lite.models.decode import BEAM_INVARIANT

    def no_eos(logits):   # as HF's min_new_tokens: EOS can never be chosen
        return logits.at[:, decoding.EOS_ID].set(decoding.NEG_INF)

    @functools.partial(nnx.jit, static_argnames=("method", "new_tokens", "beam_size"))
    def generate(model, prompt, *, method, new_tokens, beam_size):
        logits0, state = init_decode_state(model, prompt, new_tokens)

        def step(s, t):
            logits, s = decode_step(model, s, t)
            return no_eos(logits), s

        if method == "greedy":
            out = decoding.greedy_search(no_eos(logits0), state, step, max_decode_length=new_tokens, eos_id=-1)
            return out.tokens
        out = decoding.beam_search(no_eos(logits0), state, step, max_decode_length=new_tokens,
                                   beam_size=beam_size, alpha=0.6, eos_id=-1, beam_invariant=BEAM_INVARIANT)
        return out.tokens[:, 0]

    return generate


def build_model(config, seed: int):
    from flax import nnx

    from t5x_lite.models import build_model as build
    cfg = resolve_model(config)
    if cfg.architecture != "encoder_decoder":
        fail(f"bench_decode needs an encoder_decoder config (T5ForConditionalGeneration); this one is "
             f"{cfg.architecture}")
    return cfg, build(cfg, nnx.Rngs(seed))


def export_hf(cfg, model, directory: str) -> str:
    """The model's params through the project's converter: params-only checkpoint -> t5x_to_hf."""
    import jax
    import numpy as np
    from flax import nnx

    from t5x_lite.checkpoints import save_params_checkpoint
    from t5x_lite.convert import t5x_to_hf
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    ckpt, hf_dir = os.path.join(directory, "ckpt"), os.path.join(directory, "hf")
    save_params_checkpoint(ckpt, params, {"model": cfg.to_dict(), "vocabulary": None})
    with contextlib.redirect_stderr(io.StringIO()):   # its one warning: no vocabulary, so no tokenizer files
        t5x_to_hf(ckpt, hf_dir)
    return hf_dir


def agreement(a, b) -> str:
    """'identical' or where two [B, N] token arrays first part."""
    import numpy as np
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return f"shapes differ: {a.shape} vs {b.shape}"
    same_rows = int((a == b).all(axis=1).sum())
    if same_rows == a.shape[0]:
        return f"identical ({a.shape[0]} rows x {a.shape[1]} tokens)"
    first = [int(np.argmax(r)) for r in (a != b) if r.any()]
    return (f"{same_rows}/{a.shape[0]} rows identical, {int((a == b).sum())}/{a.size} tokens equal; "
            f"earliest divergence at new token {min(first)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/t5_1_1.py:small", help="configs/NAME.py[:ARG], or a path")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs", type=int, default=512, help="encoder input tokens per row (default 512)")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens generated per row (default 64)")
    p.add_argument("--methods", default="greedy,beam", help="comma list of greedy, beam (default both)")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--score", action="store_true", help="scoring throughput instead of decoding")
    p.add_argument("--targets", type=int, default=128, help="--score: target tokens per row (default 128)")
    p.add_argument("--reps", type=int, default=3, help="interleaved timed repetitions per side (default 3)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed interleaved rounds after the first call of each side (which compiles and gives "
                        "the sanity check; default 1)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "config"], default="config",
                   help="compute dtype (default: the config's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--seed", type=int, default=0, help="init and input seed")
    p.add_argument("--vs-hf", action="store_true", help="interleave Hugging Face PyTorch repetitions")
    p.add_argument("--json", default=None, metavar="PATH", help="write every figure to this JSON file")
    a = p.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    if not methods or any(m not in ("greedy", "beam") for m in methods):
        fail(f"--methods must be a comma list of greedy, beam; got {a.methods!r}")
    for name in ("batch", "inputs", "new_tokens", "beam_size", "targets", "reps"):
        if getattr(a, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.warmup < 0:
        fail(f"--warmup must be >= 0, got {a.warmup}")
    config = load_config(a.config, a.set, a.dtype)

    import jax
    import numpy as np
    device = benchlib.device_description()
    t0 = time.perf_counter()
    cfg, model = build_model(config, a.seed)
    rng = np.random.default_rng(a.seed)
    hi = min(cfg.vocab_size, 32000)
    x = rng.integers(2, hi, (a.batch, a.inputs)).astype(np.int32)
    y = rng.integers(2, hi, (a.batch, a.targets)).astype(np.int32)
    setup_s = time.perf_counter() - t0
    hf, tmp = None, tempfile.TemporaryDirectory(prefix="bench_decode_")
    notes, fns, sections, checks = [], {}, [], {}
    try:
        if a.vs_hf:
            t0 = time.perf_counter()
            hf_dir = export_hf(cfg, model, tmp.name)
            setup = {"task": "score" if a.score else "generate", "hf_dir": hf_dir, "input_ids": x.tolist(),
                     "labels": y.tolist(), "bf16": cfg.dtype == "bfloat16", "threads": os.cpu_count() or 1}
            hf = benchlib.HFWorker(setup)
            notes.append(f"HF torch: {hf.info['params'] / 1e6:.1f}M params exported by t5x_to_hf and loaded in "
                         f"{time.perf_counter() - t0:.1f} s, on {hf.info['device']}, {hf.info['threads']} threads, "
                         f"torch {hf.info['torch']}, transformers {hf.info['transformers']}")
        if a.score:
            from t5x_lite.scoring import Scorer, bucket_length
            scorer = Scorer(cfg, model, a.batch)
            rows = [(r.tolist(), t.tolist()) for r, t in zip(x, y)]
            fns["t5x_lite score"] = lambda: benchlib.timed(lambda: scorer.score(rows))
            padded = (bucket_length(a.inputs, scorer.max_len), bucket_length(a.targets, scorer.max_len))
            if padded != (a.inputs, a.targets):
                notes.append(f"t5x_lite's Scorer pads to power-of-two buckets: it computes {padded[0]} + {padded[1]} "
                             f"tokens per row where HF computes {a.inputs} + {a.targets}")
            if hf is not None:
                fns["HF score"] = lambda: hf.rep()["time_s"]
            ours = [sum(v) for v in scorer.score(rows)]   # compile; the sanity check
            if hf is not None:
                theirs = hf.rep(return_scores=True)["log_likelihood"]
                diff = float(np.max(np.abs(np.array(ours) - np.array(theirs))))
                checks["score_max_abs_diff"] = diff
                notes.append(f"sanity: per-example log-likelihoods (about {np.mean(ours):.1f}) differ by at most "
                             f"{diff:.4f} between the two sides")
            pairs = [("score", "examples", a.batch, {"t5x_lite score": "t5x_lite", "HF score": "HF torch"})]
        else:
            gen = _generate_fn()
            prompt = {"encoder_input_tokens": jax.numpy.asarray(x)}
            pairs = []
            for m in methods:
                k = a.beam_size if m == "beam" else 1

                def ours(m=m):
                    return np.asarray(gen(model, prompt, method=m, new_tokens=a.new_tokens, beam_size=a.beam_size))

                fns[f"t5x_lite {m}"] = functools.partial(benchlib.timed, ours)
                if hf is not None:
                    fns[f"HF {m}"] = functools.partial(
                        lambda k: hf.rep(num_beams=k, new_tokens=a.new_tokens)["time_s"], k)
                tokens = ours()   # compile; the sanity check
                if hf is not None:
                    r = hf.rep(num_beams=k, new_tokens=a.new_tokens, return_tokens=True)
                    checks[f"{m}_agreement"] = agreement(tokens, r["tokens"])
                    notes.append(f"sanity: {m} outputs t5x_lite vs HF: {checks[f'{m}_agreement']}")
                    if r["new_tokens"] != a.new_tokens or tokens.shape[1] != a.new_tokens:
                        fail(f"{m}: generated {tokens.shape[1]} (t5x_lite) / {r['new_tokens']} (HF) tokens per row, "
                             f"not {a.new_tokens}")
                name = f"{m} decoding" + (f" (beam {k})" if m == "beam" else "")
                pairs.append((name, "tokens", a.batch * a.new_tokens,
                              {f"t5x_lite {m}": "t5x_lite", f"HF {m}": "HF torch"}))
        monitor = benchlib.LoadMonitor().start()
        result = benchlib.interleave(fns, a.reps, warmup=a.warmup)
        load = monitor.stop()
    finally:
        if hf is not None:
            hf.close()
        tmp.cleanup()
    for what, unit, work, names in pairs:
        sections.append((what, unit, work, benchlib.split(result, {k: v for k, v in names.items() if k in fns})))
    shape = (f"batch {a.batch}, inputs {a.inputs}, " +
             (f"targets {a.targets}" if a.score else f"{a.new_tokens} new tokens per row (EOS masked on both sides)"))
    notes.insert(0, f"t5x_lite {a.config}: {cfg.dtype}, random init (seed {a.seed}), {shape}; model built in "
                    f"{setup_s:.1f} s" + (f"; --set {' '.join(a.set)}" if a.set else ""))
    ratios = benchlib.print_report(sections, device, load, notes=notes)
    benchlib.write_json(a.json, {
        "tool": "bench_decode", "mode": "score" if a.score else "decode", "device": device, "load": load,
        "config": a.config, "sets": a.set, "dtype": str(cfg.dtype), "batch": a.batch, "inputs": a.inputs,
        "new_tokens": a.new_tokens, "targets": a.targets, "beam_size": a.beam_size, "reps": a.reps,
        "warmup": a.warmup, "order": result["order"], "checks": checks, "hf": hf.info if hf is not None else None,
        "sections": [{"what": w, "unit": u, "work_per_rep": n, "ratio_t5x_lite_over_hf": rt,
                      "median_s": r["median"], "times_s": r["times"],
                      "rate_per_s": {k: n / t for k, t in r["median"].items() if t > 0}}
                     for (w, u, n, r), rt in zip(sections, ratios)]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
