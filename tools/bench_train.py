"""Train-step benchmark: step time, tokens/s and FLOP rate of a config's model, optionally against HF.

    python tools/bench_train.py --config configs/t5_1_1.py:small --batch 8 --inputs 512 --targets 114 --steps 5
    python tools/bench_train.py --config configs/t5_1_1.py:small --batch 8 --vs-hf --reps 5   # + HF PyTorch T5
    python tools/bench_train.py ... --dtype bfloat16 --set model.remat_policy=full --json out.json

The batch is synthetic (random tokens at full length, no packing), so the figure is the model +
optimizer step alone.  After --warmup steps (compile included), --reps repetitions of --steps steps
each are timed; with --vs-hf they are INTERLEAVED with repetitions of Hugging Face's PyTorch
T5ForConditionalGeneration (same sizes, batch, lengths and optimizer family; built once in a
persistent worker, tools/hf_worker.py, under this Python or $HF_PYTHON, e.g. /tmp/hfenv/bin/python
of docs/interop.md), so both sides see the same machine state.  Reported: the ratio of the MEDIAN
step times first (t5x_lite / HF speed, > 1 = t5x_lite faster), the device model, a WARNING when
other processes used the CPUs meanwhile (tools/benchlib.py, LoadMonitor), then each side's median
step time, tokens/s, the achieved model FLOP rate and its share of THIS run's measured matmul peak
(the best jitted square matmul in the compute dtype, before and after the reps; no peak is
assumed), plus the datasheet MFU on an accelerator the project's table knows.  --vs-hf: encoder-
decoder configs only.  --set KEY=VALUE (repeatable) overrides any config key, e.g.
--set model.remat_policy=full; --json PATH writes every figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import REPO, fail  # noqa: E402


def load_config(name: str, sets=(), dtype: str = "config"):
    """The config at `name` (configs/NAME.py[:ARG] or a path), --dtype and --set overrides applied."""
    from t5x_lite.errors import UserError
    from t5x_lite.train.main import parse_args
    path = name if name.endswith(".py") or ":" in name else os.path.join(REPO, "configs", name + ".py")
    file = path.split(":", 1)[0]
    if not os.path.exists(file) and os.path.exists(os.path.join(REPO, file)):   # configs/... from any directory
        path = os.path.join(REPO, path)
    try:
        config, _ = parse_args(["--config", path])
    except UserError as e:
        fail(f"--config {name}: {e}")
    if dtype != "config":
        with config.unlocked():
            config.model.dtype = dtype
    benchlib.apply_sets(config, benchlib.parse_sets(sets))
    return config


def resolve_model(config):
    from t5x_lite.errors import UserError
    from t5x_lite.train.config import resolve
    try:
        return resolve(config)[0]
    except UserError as e:
        fail(str(e))


class JaxTrain:
    """The jitted train step of `config` on a synthetic batch; rep(steps) -> seconds per step."""

    def __init__(self, config, batch: int, inputs: int, targets: int):
        import jax
        import numpy as np

        from t5x_lite import partitioning
        from t5x_lite.train import metrics as metrics_lib, optimizers, step as step_lib

        with config.unlocked():
            config.data.batch_size = batch
            config.data.feature_lengths = {"inputs": inputs, "targets": targets} if inputs else {"targets": targets}
        self.cfg = model_cfg = resolve_model(config)
        self.mesh = mesh = partitioning.make_mesh(config.mesh)
        bundle = step_lib.bundle_from_config(model_cfg)
        tx, schedule = optimizers.make_optimizer(config.optimizer, int(config.train.num_steps),
                                                 grad_clip=float(config.train.grad_clip))
        abstract, specs = step_lib.state_specs(bundle, tx, mesh)
        shardings = partitioning.named(mesh, specs)
        self.state = step_lib.init_state(bundle, tx, shardings, seed=0)
        self.train_step = step_lib.make_train_step(
            bundle, tx, schedule, mesh=mesh, state_shardings=shardings, z_loss=float(config.train.z_loss),
            loss_normalization=str(config.train.loss_normalization),
            num_microbatches=int(config.train.num_microbatches))
        rng = np.random.default_rng(0)
        vocab = min(model_cfg.vocab_size, 8000)

        def tokens(length):
            return rng.integers(2, vocab, (batch, length)).astype(np.int32)

        if model_cfg.architecture == "encoder_decoder":
            tgt = tokens(targets)
            host = {"encoder_input_tokens": tokens(inputs), "decoder_target_tokens": tgt,
                    "decoder_input_tokens": np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], 1),
                    "decoder_loss_weights": np.ones((batch, targets), np.float32)}
        elif model_cfg.architecture == "decoder_only":
            tgt = tokens(inputs + targets)
            host = {"decoder_target_tokens": tgt,
                    "decoder_input_tokens": np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], 1),
                    "decoder_loss_weights": np.ones_like(tgt, np.float32)}
            if model_cfg.decoder_mask == "prefix":
                causal = (np.arange(inputs + targets) <= inputs)[None].repeat(batch, 0)
                host["decoder_causal_attention"] = causal.astype(np.int32)
        else:
            tgt = tokens(inputs)
            host = {"encoder_input_tokens": tgt, "encoder_target_tokens": tgt,
                    "encoder_loss_weights": np.ones_like(tgt, np.float32)}
        self.batch_arrays = partitioning.global_batch(host, mesh)
        self.flops = metrics_lib.model_flops_per_step(model_cfg, batch, {"inputs": inputs, "targets": targets})
        self.params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))
        self.devices = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
        self.loss = None

    def rep(self, steps: int) -> float:
        import jax
        t = time.perf_counter()
        for _ in range(steps):
            self.state, m = self.train_step(self.state, self.batch_arrays)
        jax.block_until_ready(m)
        dt = (time.perf_counter() - t) / steps
        self.loss = m["loss"]
        return dt


def hf_train_setup(mc, optimizer: str, batch: int, inputs: int, targets: int) -> dict:
    return {"task": "train", "model": mc.to_dict(), "batch": batch, "inputs": inputs, "targets": targets,
            "optimizer": optimizer, "bf16": mc.dtype == "bfloat16", "threads": os.cpu_count() or 1}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/t5_1_1.py:small", help="configs/NAME.py[:ARG], or a path")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs", type=int, default=512)
    p.add_argument("--targets", type=int, default=114)
    p.add_argument("--steps", type=int, default=5, help="train steps per timed repetition (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first, per side (compile included)")
    p.add_argument("--reps", type=int, default=3, help="interleaved timed repetitions per side (default 3)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "config"], default="config",
                   help="compute dtype (default: the config's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. model.remat_policy=full); value parsed as a Python "
                        "literal, else a string")
    p.add_argument("--vs-hf", action="store_true", help="interleave Hugging Face PyTorch T5 repetitions")
    p.add_argument("--json", default=None, metavar="PATH", help="write every figure to this JSON file")
    a = p.parse_args(argv)
    for name in ("batch", "targets", "steps", "reps"):
        if getattr(a, name) < 1:
            fail(f"--{name} must be >= 1, got {getattr(a, name)}")
    if a.inputs < 0 or a.warmup < 0:
        fail("--inputs and --warmup must be >= 0")
    config = load_config(a.config, a.set, a.dtype)

    import jax
    device = benchlib.device_description()
    dtype = str(config.model.dtype)
    peaks = [benchlib.matmul_peak(dtype)]
    t0 = time.perf_counter()
    jx = JaxTrain(config, a.batch, a.inputs, a.targets)
    mc = jx.cfg
    jx.rep(max(a.warmup, 1))
    compile_s = time.perf_counter() - t0
    fns = {"t5x_lite": lambda: jx.rep(a.steps)}
    hf = None
    if a.vs_hf:
        if mc.architecture != "encoder_decoder":
            fail("--vs-hf supports encoder_decoder configs only")
        hf = benchlib.HFWorker(hf_train_setup(mc, str(config.optimizer.name), a.batch, a.inputs, a.targets))
        if a.warmup:
            hf.rep(steps=a.warmup)
        fns["HF torch"] = lambda: hf.rep(steps=a.steps)["time_s"]
    try:
        monitor = benchlib.LoadMonitor().start()
        result = benchlib.interleave(fns, a.reps, warmup=0)
        load = monitor.stop()
    finally:
        if hf is not None:
            hf.close()
    peaks.append(benchlib.matmul_peak(dtype))
    peak = max(peaks)

    tokens = a.batch * (a.inputs + a.targets)
    med = result["median"]
    ndev = jax.device_count()
    notes = [f"t5x_lite {a.config}: {jx.params / 1e6:.1f}M params, {mc.dtype}, batch {a.batch} x "
             f"({a.inputs} + {a.targets}) tokens, {jx.devices}, {a.steps} steps per rep; compile + warm-up "
             f"{compile_s:.1f} s; loss {float(jx.loss):.3f}"
             + (f"; --set {' '.join(a.set)}" if a.set else "")]
    notes.append(f"measured {dtype} matmul peak {peak / 1e9:.0f} GFLOP/s per device (before/after the reps: "
                 f"{', '.join(f'{x / 1e9:.0f}' for x in peaks)}); model {jx.flops / 1e12:.4f} TFLOP/step")
    figures = {}
    for name, t in med.items():
        rate = jx.flops / t
        figures[name] = {"step_time_s": t, "tokens_per_s": tokens / t, "flops_per_s": rate,
                         "pct_of_measured_peak": 100 * rate / (peak * ndev), "step_times_s": result["times"][name]}
        notes.append(f"{name}: {rate / 1e9:.1f} GFLOP/s achieved = {figures[name]['pct_of_measured_peak']:.1f}% "
                     f"of the measured peak" + ("" if ndev == 1 else f" x {ndev} devices"))
    from t5x_lite.train import metrics as metrics_lib
    datasheet = metrics_lib.mfu(jx.flops, med["t5x_lite"], mc.dtype)
    if datasheet is not None:
        figures["t5x_lite"]["datasheet_mfu"] = datasheet
        notes.append(f"t5x_lite datasheet MFU {100 * datasheet:.1f}% (t5x_lite/train/metrics.py peak table)")
    if hf is not None:
        notes.append(f"HF torch: {hf.info['params'] / 1e6:.1f}M params on {hf.info['device']}, "
                     f"{hf.info['threads']} threads, torch {hf.info['torch']}, transformers "
                     f"{hf.info['transformers']}, {config.optimizer.name}")
    ratio = benchlib.print_report([("train step", "tokens", tokens, result)], device, load, notes=notes)[0]
    if ratio is None:
        print(f"t5x_lite train step: median {med['t5x_lite']:.4f} s (no peer: add --vs-hf for the ratio)")
    benchlib.write_json(a.json, {
        "tool": "bench_train", "ratio_t5x_lite_over_hf": ratio, "device": device, "load": load,
        "config": a.config, "sets": a.set, "dtype": str(mc.dtype), "batch": a.batch, "inputs": a.inputs,
        "targets": a.targets, "steps_per_rep": a.steps, "reps": a.reps, "warmup": a.warmup,
        "order": result["order"], "params": jx.params, "model_tflops_per_step": jx.flops / 1e12,
        "matmul_peak_flops": peak, "matmul_peaks_flops": peaks, "devices": jx.devices,
        "compile_and_warmup_s": compile_s,
        "loss": float(jx.loss), "figures": figures, "hf": hf.info if hf is not None else None})
    return 0


if __name__ == "__main__":
    sys.exit(main())
