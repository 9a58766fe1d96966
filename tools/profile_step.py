"""Where a train step's time goes, op by op: t5x_lite (JAX profiler) and, with --vs-hf, HF PyTorch
T5 (torch.profiler) at the same shape, grouped into the same categories.

    python tools/profile_step.py --config configs/t5_1_1.py:small --batch 2 --inputs 512 --targets 114 --vs-hf

t5x_lite: the jitted train step is compiled, run --steps times under jax.profiler with a Perfetto
trace, and every XLA op's (thunk's) time is summed by name.  Each op is mapped to the project
function that created it through the compiled HLO's source tables (stack_frame_id -> FileLocations
-> FunctionNames: JAX records the innermost frame outside JAX and the libraries), and from there to
a category:

    matmul       dots (and fusions holding a dot) of the dense layers and the output layer
    attention    the attention score/context dots, softmax and masking (models/attention.py)
    relpos bias  T5's relative position bias (bucket computation + gather)
    embedding    the token embedding lookup and its gradient (a scatter into the table)
    loss         cross-entropy, z-loss, accuracy (train/losses.py)
    optimizer    everything the train step does after the gradient: the optax update, clipping,
                 the gradient norm (train/step.py, train/optimizers.py)
    layout       stand-alone transposes and copies
    other        norms, activations, dropout, the rest

HF: the benchmarks' HF model and Adafactor (tools/hf_worker.py), torch.profiler over the same
number of steps; each op's self time goes to a category by the aten op name (bmm and softmax ->
attention: T5Attention's score and context products are HF T5's only bmm; mm/addmm/matmul/linear
-> matmul; embedding -> embedding, which holds HF's relative position bias too;
copy_/contiguous/transpose -> layout; cross_entropy/log_softmax/nll -> loss; anything under the
optimizer's step -> optimizer).

Prints one table: per category, ms per step and % of the step, for both; and the measured step
time.  --decode greedy|beam profiles bench_decode's generate call instead (kv cache: the cache
writes and per-layer slicing of models/decode.py; search: the greedy/beam bookkeeping of
decoding.py), t5x_lite only:

    python tools/profile_step.py --decode beam --batch 8 --inputs 512 --new-tokens 64 --steps 1
  --json PATH writes the same.  Profiles inflate small ops; use tools/bench_train.py for the
step times that matter.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CATEGORIES = ("matmul", "attention", "relpos bias", "embedding", "loss", "optimizer", "kv cache", "search",
              "layout", "other")

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S+\s+([\w\-]+)\(")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_FRAME = re.compile(r"stack_frame_id=(\d+)")
_META_OP = re.compile(r'op_name="([^"]*)"')
_COMP = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_TABLE_ROW = re.compile(r"^(\d+)\s+(.*)$")
_TABLES = ("FileNames", "FunctionNames", "FileLocations", "StackFrames")


def _tables(text: str) -> dict:
    """The HLO module's source tables (FileNames, FunctionNames, FileLocations, StackFrames):
    {table: {id: row text}}.  JAX records, per op, the innermost Python frame outside JAX and
    the libraries: the project's function that created it."""
    out, current = {}, None
    for line in text.splitlines():
        if line in _TABLES:
            current = out.setdefault(line, {})
            continue
        if current is not None:
            m = _TABLE_ROW.match(line)
            if not m:
                current = None
                continue
            current[int(m.group(1))] = m.group(2)
    return out


def frame_functions(text: str) -> dict[int, tuple[str, str]]:
    """stack_frame_id -> (file basename, function name) of that frame's location."""
    t = _tables(text)
    files = {k: os.path.basename(v.strip('"')) for k, v in t.get("FileNames", {}).items()}
    funcs = {k: v.strip('"') for k, v in t.get("FunctionNames", {}).items()}
    locs = {}
    for k, v in t.get("FileLocations", {}).items():
        f, fn = re.search(r"file_name_id=(\d+)", v), re.search(r"function_name_id=(\d+)", v)
        locs[k] = (files.get(int(f.group(1)), "") if f else "", funcs.get(int(fn.group(1)), "") if fn else "")
    out = {}
    for k, v in t.get("StackFrames", {}).items():
        loc = re.search(r"file_location_id=(\d+)", v)
        out[k] = locs.get(int(loc.group(1)), ("", "")) if loc else ("", "")
    return out


def parse_hlo(text: str) -> tuple[dict, dict]:
    """-> ({instruction: (opcode, called computation, file, function, op_name)}, {computation: [opcodes]})."""
    frames = frame_functions(text)
    instrs, comps, current = {}, collections.defaultdict(list), None
    for line in text.splitlines():
        m = _COMP.match(line)
        if m and "=" not in line.split("{")[0]:
            current = m.group(1)
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, opcode = m.group(1), m.group(2)
        calls = _CALLS.search(line)
        fr, op = _FRAME.search(line), _META_OP.search(line)
        path, func = frames.get(int(fr.group(1)), ("", "")) if fr else ("", "")
        instrs[name] = (opcode, calls.group(1) if calls else None, path, func, op.group(1) if op else "")
        if current:
            comps[current].append(opcode)
    return instrs, comps


def categorize(info, comps) -> str:
    """An HLO instruction -> a category, from the Python function that created it and its opcodes."""
    opcode, called, path, func, op_name = info
    inner = set(comps.get(called, ())) if called else set()
    has_dot = bool((inner | {opcode}) & {"dot", "convolution"})
    if path == "optimizers.py" or func.endswith("train_step"):
        return "optimizer"
    if path == "decoding.py":   # greedy/beam bookkeeping: top-k, sequences, the beam reorder
        return "search"
    if path == "losses.py":
        return "loss"
    if func in ("RelativePositionBias.__call__", "relative_position_bucket", "_relpos"):
        return "relpos bias"
    if path == "attention.py" or func == "attention_mask":
        return "attention"
    if func in ("Embed.__call__", "_Network.embed_tokens", "_Network.embed") and not has_dot:
        return "embedding"
    if has_dot:
        return "matmul"
    if path == "decode.py" or func.startswith("TransformerLayer.decode"):   # cache writes, per-layer state
        return "kv cache"
    if opcode in ("transpose", "copy") or (inner and inner <= {"transpose", "copy", "parameter", "bitcast"}):
        return "layout"
    return "other"


def profile_jax(args) -> dict:
    sys.path.insert(0, os.path.join(REPO, "tools"))
    from bench_train import JaxTrain, load_config   # the step and synthetic batch bench_train times

    config = load_config(args.config, dtype=args.dtype)
    if args.decode:
        return profile_decode(config, args)
    jx = JaxTrain(config, args.batch, args.inputs, args.targets)
    return profile_fn(jx.train_step, (jx.state, jx.batch_arrays), jx.mesh, args, jx.cfg, carry=True)


def profile_decode(config, args) -> dict:
    """bench_decode's jitted generate (greedy or beam, EOS masked) on its random prompts."""
    import jax
    import numpy as np
    from flax import nnx

    from t5x_lite import partitioning
    from bench_decode import _generate_fn, build_model

    cfg, model = build_model(config, 0)
    x = np.random.default_rng(0).integers(2, min(cfg.vocab_size, 8000), (args.batch, args.inputs)).astype(np.int32)
    prompt = {"encoder_input_tokens": x}
    gen = _generate_fn()
    graphdef, params = nnx.split(model)
    fn = jax.jit(lambda p, pr: gen(nnx.merge(graphdef, p), pr, method=args.decode, new_tokens=args.new_tokens,
                                   beam_size=args.beam_size))
    mesh = partitioning.make_mesh(config.mesh)
    return profile_fn(fn, (params, prompt), mesh, args, cfg, carry=False)


def profile_fn(fn, fn_args, mesh, args, model_cfg, *, carry: bool) -> dict:
    """Compile `fn` (jitted), time args.steps calls, then trace as many and sum every XLA op's time
    by category.  carry: fn returns (new first argument, metrics), as the train step."""
    import jax

    from t5x_lite import partitioning

    def call(a):
        out = fn(*a)
        return ((out[0], *a[1:]) if carry else a), out

    with partitioning.activate(mesh):
        hlo = fn.lower(*fn_args).compile().as_text()
    if args.dump_hlo:
        with open(args.dump_hlo, "w") as f:
            f.write(hlo)
    instrs, comps = parse_hlo(hlo)
    a = fn_args
    for _ in range(2):
        a, out = call(a)
    jax.block_until_ready(out)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        a, out = call(a)
    jax.block_until_ready(out)
    step_s = (time.perf_counter() - t0) / args.steps
    tmp = tempfile.mkdtemp(prefix="t5xl_prof_")
    try:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(args.steps):
                a, out = call(a)
            jax.block_until_ready(out)
        trace = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
        events = json.load(gzip.open(trace[0]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    events = events["traceEvents"] if isinstance(events, dict) else events
    per_cat = collections.Counter()
    per_op = collections.Counter()
    unmatched = 0.0
    for e in events:
        if e.get("ph") != "X":
            continue
        name = e["name"]
        if name in instrs:
            cat = categorize(instrs[name], comps)
            per_cat[cat] += e.get("dur", 0.0)
            per_op[(cat, name)] += e.get("dur", 0.0)
        elif not name.startswith(("$", "end:")) and name[:1].islower() and "." in name:
            unmatched += e.get("dur", 0.0)
    total = sum(per_cat.values())
    return {"step_s": step_s, "ops_ms_per_step": {c: per_cat[c] / 1e3 / args.steps for c in CATEGORIES},
            "ops_total_ms_per_step": total / 1e3 / args.steps, "unmatched_ms_per_step": unmatched / 1e3 / args.steps,
            "top_ops": [(c, n, round(d / 1e3 / args.steps, 3)) for (c, n), d in per_op.most_common(15)],
            "model": model_cfg.to_dict()}


HF_PROFILE = r"""
import json, sys, time, collections
sys.path.insert(0, sys.argv[2])
import hf_worker   # the benchmarks' HF model (same construction as bench_train --vs-hf)
import torch
from torch.profiler import profile, record_function, ProfilerActivity
a = json.loads(sys.argv[1])
w = hf_worker.Worker({"task": "train", "optimizer": "adafactor", "bf16": False, **a})
opt_step = w.opt.step
def labelled_step(*args, **kw):
    with record_function("optimizer"):
        return opt_step(*args, **kw)
w.opt.step = labelled_step
w.rep({"steps": 2})
step_s = w.rep({"steps": a["steps"]})["time_s"]
with profile(activities=[ProfilerActivity.CPU]) as prof:
    w.rep({"steps": a["steps"]})
cat = collections.Counter()
def ancestors(e):
    while e is not None:
        yield e.name
        e = e.cpu_parent
for e in prof.events():
    st, n = e.self_cpu_time_total, e.name
    if not st or n == "optimizer":
        continue
    if "optimizer" in list(ancestors(e)):
        c = "optimizer"
    elif ("softmax" in n and "log_softmax" not in n) or "aten::bmm" in n:
        c = "attention"   # T5Attention's score and context products are its only bmm
    elif any(k in n for k in ("cross_entropy", "log_softmax", "nll_loss")):
        c = "loss"
    elif any(k in n for k in ("embedding",)):
        c = "embedding"
    elif any(k in n for k in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")):
        c = "matmul"
    elif any(k in n for k in ("copy_", "contiguous", "transpose", "permute", "clone", "aten::t", "reshape", "view")):
        c = "layout"
    else:
        c = "other"
    cat[c] += st
hf_worker.PROTOCOL.write(json.dumps({"step_s": step_s, "ops_ms_per_step": {k: v / 1e3 / a["steps"] for k, v in cat.items()},
                                     "ops_total_ms_per_step": sum(cat.values()) / 1e3 / a["steps"]}) + "\n")
"""


def profile_hf(model_cfg: dict, args) -> dict:
    payload = {"model": model_cfg, "batch": args.batch, "inputs": args.inputs, "targets": args.targets,
               "steps": args.steps, "threads": os.cpu_count() or 1}
    out = subprocess.run([sys.executable, "-c", HF_PROFILE, json.dumps(payload), os.path.join(REPO, "tools")],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"profile_step: the HF profile failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/t5_1_1.py:small")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--inputs", type=int, default=512)
    p.add_argument("--targets", type=int, default=114)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "config"])
    p.add_argument("--vs-hf", action="store_true")
    p.add_argument("--json", default="")
    p.add_argument("--dump-hlo", default="", metavar="PATH", help="write the compiled step's HLO text here")
    p.add_argument("--decode", choices=["greedy", "beam"], default="",
                   help="profile bench_decode's generate call instead of a train step (--batch rows of "
                        "--inputs tokens, --new-tokens each; no --vs-hf)")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--beam-size", type=int, default=4)
    args = p.parse_args(argv)
    if args.decode and args.vs_hf:
        p.error("--vs-hf profiles HF's train step only; drop it with --decode")
    jx = profile_jax(args)
    hf = profile_hf({k: v for k, v in jx["model"].items()}, args) if args.vs_hf else None
    try:
        from benchlib import device_description
        device = device_description()
    except Exception:   # benchlib absent: the CPU model from /proc/cpuinfo
        device = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
                      "unknown CPU")
    what = (f"{args.decode} decoding (beam {args.beam_size}), {args.new_tokens} new tokens"
            if args.decode == "beam" else f"greedy decoding, {args.new_tokens} new tokens" if args.decode
            else f"({args.inputs} + {args.targets})")
    print(f"device: {device}; {args.config} batch {args.batch} x {args.inputs if args.decode else ''}"
          f"{'' if args.decode else what}{' inputs, ' + what if args.decode else ''}, {args.dtype}, "
          f"{args.steps} profiled {'calls' if args.decode else 'steps'}")
    head = f"{'category':<12} {'t5x_lite ms':>12} {'%':>6}" + (f" {'HF ms':>10} {'%':>6}" if hf else "")
    print(head)
    jt, ht = jx["ops_total_ms_per_step"], (hf or {}).get("ops_total_ms_per_step", 0)
    for c in CATEGORIES:
        row = f"{c:<12} {jx['ops_ms_per_step'][c]:12.1f} {100 * jx['ops_ms_per_step'][c] / max(jt, 1e-9):6.1f}"
        if hf:
            v = hf["ops_ms_per_step"].get(c, 0.0)
            row += f" {v:10.1f} {100 * v / max(ht, 1e-9):6.1f}"
        print(row)
    print(f"{'sum of ops':<12} {jt:12.1f} {'':>6}" + (f" {ht:10.1f}" if hf else ""))
    print(f"{'call (wall)' if args.decode else 'step (wall)':<12} {1e3 * jx['step_s']:12.1f} {'':>6}" + (f" {1e3 * hf['step_s']:10.1f}" if hf else ""))
    print("t5x_lite's largest ops (category, HLO op, ms/step): "
          + "; ".join(f"{c} {n} {d}" for c, n, d in jx["top_ops"][:8]))
    if args.json:
        jx.pop("model", None)
        with open(args.json, "w") as f:
            json.dump({"device": device, "args": vars(args), "t5x_lite": jx, "hf": hf}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
