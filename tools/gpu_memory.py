"""Peak device memory (and step time) of one config's train step; one config per process.

    python tools/gpu_memory.py --config configs/t5_1_1.py:base --batch 64 --inputs 512 --targets 114 \\
        --dtype bfloat16 --set model.remat_policy=full --json out/remat_full.json

tools/bench_train.py times the step but records no memory; this builds the same step on the same
synthetic batch (its JaxTrain class and config loading, so the program is the one it times and JAX's
persistent compilation cache can share the compile), compiles it ahead of time, runs --warmup + --reps
x --steps steps and reports:
  peak_bytes_in_use   the allocator's peak over the whole process (params, optimizer state, batch,
                      the step's buffers): jax.devices()[0].memory_stats(), GPU/TPU only (null on CPU);
  bytes_limit         what the allocator may use on that device;
  xla_*_bytes         XLA's compile-time memory analysis of the step (argument, output, temp = the
                      activations and workspace; alias = donated state reused) - also on CPU, where it
                      is the only figure;
  step time (median of --reps), tokens/s, model TFLOP/step and datasheet MFU (t5x_lite/train/metrics.py;
  null on CPU).
Running out of device memory is a result, not a crash: the JSON then holds "oom": true and the
process exits 3 with one line.  Bad input: one line, exit 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import fail  # noqa: E402

OOM_EXIT = 3


def memory_analysis(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
    except Exception:   # not every backend implements it
        return {}
    if m is None:
        return {}
    keys = {"argument": "argument_size_in_bytes", "output": "output_size_in_bytes", "temp": "temp_size_in_bytes",
            "alias": "alias_size_in_bytes", "generated_code": "generated_code_size_in_bytes"}
    return {f"xla_{k}_bytes": int(getattr(m, v)) for k, v in keys.items() if getattr(m, v, None) is not None}


def device_memory() -> dict:
    import jax
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:
        stats = {}
    return {"peak_bytes_in_use": stats.get("peak_bytes_in_use"), "bytes_limit": stats.get("bytes_limit")}


def is_oom(e: BaseException) -> bool:
    text = f"{type(e).__name__}: {e}"
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower() or "OOM" in text


def gib(n) -> str:
    return "n/a" if n is None else f"{n / 2 ** 30:.2f} GiB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/t5_1_1.py:base", help="configs/NAME.py[:ARG], or a path")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--inputs", type=int, default=512, help="0 for a targets-only (decoder LM) batch")
    p.add_argument("--targets", type=int, default=114)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "config"], default="config")
    p.add_argument("--steps", type=int, default=3, help="steps per timed rep (default 3)")
    p.add_argument("--reps", type=int, default=3, help="timed reps (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the compile (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--label", default="", help="a name for this row in the JSON")
    p.add_argument("--json", default=None, metavar="PATH", help="write the figures to this JSON file")
    a = p.parse_args(argv)
    for name in ("batch", "targets", "steps", "reps"):
        if getattr(a, name) < 1:
            fail(f"--{name} must be >= 1, got {getattr(a, name)}")
    if a.inputs < 0 or a.warmup < 0:
        fail("--inputs and --warmup must be >= 0")
    try:
        import bench_train
        load_config, JaxTrain = bench_train.load_config, bench_train.JaxTrain
    except (ImportError, AttributeError) as e:
        fail(f"tools/bench_train.py no longer provides load_config/JaxTrain ({e}); gpu_memory.py builds on them")
    config = load_config(a.config, a.set, a.dtype)

    import jax
    from t5x_lite.errors import UserError
    from t5x_lite.train import metrics as metrics_lib
    out = {"tool": "gpu_memory", "label": a.label, "config": a.config, "sets": a.set, "batch": a.batch,
           "inputs": a.inputs, "targets": a.targets, "device": benchlib.device_description(), "oom": False}
    try:
        jx = JaxTrain(config, a.batch, a.inputs, a.targets)
        t0 = time.perf_counter()
        compiled = jx.train_step.lower(jx.state, jx.batch_arrays).compile()
        out["compile_s"] = time.perf_counter() - t0
        out.update(memory_analysis(compiled))
        state = jx.state
        for _ in range(a.warmup):
            state, m = compiled(state, jx.batch_arrays)
        jax.block_until_ready(state)
        times = []
        for _ in range(a.reps):
            t = time.perf_counter()
            for _ in range(a.steps):
                state, m = compiled(state, jx.batch_arrays)
            jax.block_until_ready((state, m))
            times.append((time.perf_counter() - t) / a.steps)
        loss = float(m["loss"])
    except UserError as e:
        fail(str(e))
    except Exception as e:
        if not is_oom(e):
            raise
        out.update(oom=True, error=str(e).splitlines()[0][:300], **device_memory())
        benchlib.write_json(a.json, out)
        print(f"gpu_memory {a.label or a.config}: OUT OF MEMORY at batch {a.batch} ({out['error']})", file=sys.stderr)
        return OOM_EXIT
    step = statistics.median(times)
    mc = jx.cfg
    tokens = a.batch * (a.inputs + a.targets)
    out.update(device_memory())
    out.update(params=jx.params, dtype=str(mc.dtype), remat_policy=str(mc.remat_policy),
               attention_impl=str(getattr(mc, "attention_impl", "n/a")), step_time_s=step, step_times_s=times,
               tokens_per_s=tokens / step, model_tflops_per_step=jx.flops / 1e12,
               datasheet_mfu=metrics_lib.mfu(jx.flops, step, str(mc.dtype)), loss=loss)
    mfu = out["datasheet_mfu"]
    print(f"gpu_memory {a.label or a.config}: peak {gib(out['peak_bytes_in_use'])} of {gib(out['bytes_limit'])}; "
          f"XLA temp {gib(out.get('xla_temp_bytes'))}, arguments {gib(out.get('xla_argument_bytes'))}; "
          f"step {1e3 * step:.1f} ms, {tokens / step:.0f} tokens/s, MFU "
          f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%'} ({out['device']})")
    benchlib.write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
