"""Train-step benchmark: step time, tokens/s and MFU of a config's model.

    python tools/bench_train.py --config configs/t5_1_1.py:small --batch 8 --inputs 512 --targets 114 --steps 5
    python tools/bench_train.py --config configs/t5_1_1.py:small --batch 8 --vs-hf     # + Hugging Face PyTorch T5

The batch is synthetic (random tokens at full length, no packing), so the figure
is the model + optimizer step alone.  MFU is against the accelerator's datasheet peak; on CPU,
where no peak is assumed, against this machine's matmul peak measured in the same run (the best
of jitted 2048^3 matmuls in the compute dtype, before and after the steps), printed beside the
CPU model.  --vs-hf times transformers'
T5ForConditionalGeneration with the same sizes, batch, lengths and optimizer
family in the same run (through $HF_PYTHON, e.g. /tmp/hfenv/bin/python as made in docs/interop.md,
when transformers is not importable here) and prints the ratio.  Encoder-decoder
configs only for --vs-hf.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HF_SCRIPT = r"""
import json, sys, time, torch
from transformers import T5Config, T5ForConditionalGeneration
a = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(a["threads"])
m = a["model"]
act = m["mlp_activations"]
cfg = T5Config(vocab_size=m["vocab_size"], d_model=m["d_model"], d_kv=m["d_kv"], d_ff=m["d_ff"],
               num_layers=m["num_encoder_layers"], num_decoder_layers=m["num_decoder_layers"],
               num_heads=m["num_heads"], relative_attention_num_buckets=m["relative_attention_num_buckets"],
               relative_attention_max_distance=m["relative_attention_max_distance"], dropout_rate=0.0,
               feed_forward_proj="gated-gelu" if len(act) == 2 else "relu",
               tie_word_embeddings=m["tie_embeddings"], decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
model = T5ForConditionalGeneration(cfg).train()
if not m["tie_embeddings"]:
    # transformers 5 ties lm_head to `shared` in a freshly built model; T5.1.1 has its own output embedding
    model.lm_head.weight = torch.nn.Parameter(torch.randn(V0 := m["vocab_size"], m["d_model"]) * m["d_model"] ** -0.5)
    model.config.tie_word_embeddings = False
if a["bf16"]:
    model = model.to(torch.bfloat16)
if a["optimizer"] == "adafactor":
    from transformers.optimization import Adafactor
    opt = Adafactor(model.parameters(), lr=0.01, relative_step=False, scale_parameter=True, warmup_init=False)
else:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
g = torch.Generator().manual_seed(0)
B, Li, Lt, V = a["batch"], a["inputs"], a["targets"], m["vocab_size"]
x = torch.randint(2, min(V, 32000), (B, Li), generator=g)
y = torch.randint(2, min(V, 32000), (B, Lt), generator=g)
def step():
    loss = model(input_ids=x, labels=y).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss)
for _ in range(a["warmup"]):
    step()
t = time.perf_counter()
for _ in range(a["steps"]):
    step()
print(json.dumps({"step_time_s": (time.perf_counter() - t) / a["steps"],
                  "params": sum(p.numel() for p in model.parameters())}))
"""


def load_config(name: str):
    from t5x_lite.train.main import parse_args
    path = name if name.endswith(".py") or ":" in name else os.path.join(REPO, "configs", name + ".py")
    config, _ = parse_args(["--config", path])
    return config


def bench_jax(config, batch: int, inputs: int, targets: int, steps: int, warmup: int) -> dict:
    import jax
    import numpy as np

    from t5x_lite import partitioning
    from t5x_lite.train import metrics as metrics_lib, optimizers, step as step_lib
    from t5x_lite.train.config import resolve

    with config.unlocked():
        config.data.batch_size = batch
        config.data.feature_lengths = {"inputs": inputs, "targets": targets} if inputs else {"targets": targets}
    model_cfg, _ = resolve(config)
    mesh = partitioning.make_mesh(config.mesh)
    bundle = step_lib.bundle_from_config(model_cfg)
    tx, schedule = optimizers.make_optimizer(config.optimizer, int(config.train.num_steps),
                                             grad_clip=float(config.train.grad_clip))
    abstract, specs = step_lib.state_specs(bundle, tx, mesh)
    shardings = partitioning.named(mesh, specs)
    state = step_lib.init_state(bundle, tx, shardings, seed=0)
    train_step = step_lib.make_train_step(
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
            host["decoder_causal_attention"] = (np.arange(inputs + targets) <= inputs)[None].repeat(batch, 0)
            host["decoder_causal_attention"] = host["decoder_causal_attention"].astype(np.int32)
    else:
        tgt = tokens(inputs)
        host = {"encoder_input_tokens": tgt, "encoder_target_tokens": tgt,
                "encoder_loss_weights": np.ones_like(tgt, np.float32)}
    batch_arrays = partitioning.global_batch(host, mesh)
    t0 = time.perf_counter()
    for _ in range(max(warmup, 1)):
        state, m = train_step(state, batch_arrays)
    jax.block_until_ready(m)
    compile_and_warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = train_step(state, batch_arrays)
    jax.block_until_ready(m)
    step_time = (time.perf_counter() - t0) / steps
    flops = metrics_lib.model_flops_per_step(model_cfg, batch, {"inputs": inputs, "targets": targets})
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))
    return {"params": n_params, "step_time_s": step_time, "tokens_per_s": batch * (inputs + targets) / step_time,
            "mfu": metrics_lib.mfu(flops, step_time, model_cfg.dtype), "model_tflops_per_step": flops / 1e12,
            "compile_and_warmup_s": compile_and_warmup, "loss": float(m["loss"]),
            "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}", "model_cfg": model_cfg}


def matmul_peak(dtype: str, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of the fastest of `reps` jitted n x n x n matmuls on device 0."""
    import jax
    import jax.numpy as jnp
    x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda a: a @ a)
    f(x).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def bench_hf(model_cfg, optimizer: str, batch, inputs, targets, steps, warmup, bf16: bool) -> dict:
    try:
        import transformers  # noqa: F401
        python = sys.executable
    except ImportError:
        python = os.environ.get("HF_PYTHON", "")
        if not python or not os.path.exists(python):
            raise SystemExit(f"--vs-hf: transformers is not importable and {python} does not exist "
                             "(set HF_PYTHON to a Python with torch + transformers)")
    args = {"model": model_cfg.to_dict(), "batch": batch, "inputs": inputs, "targets": targets, "steps": steps,
            "warmup": warmup, "threads": os.cpu_count() or 1, "optimizer": optimizer, "bf16": bf16}
    out = subprocess.run([python, "-c", HF_SCRIPT, json.dumps(args)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"HF benchmark failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/t5_1_1.py:small", help="configs/NAME.py, or a path")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs", type=int, default=512)
    p.add_argument("--targets", type=int, default=114)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "config"], default="config",
                   help="compute dtype (default: the config's)")
    p.add_argument("--vs-hf", action="store_true", help="also time Hugging Face PyTorch T5")
    a = p.parse_args(argv)
    config = load_config(a.config)
    if a.dtype != "config":
        with config.unlocked():
            config.model.dtype = a.dtype
    import jax
    on_cpu = jax.devices()[0].platform == "cpu"
    dtype = str(config.model.dtype)
    peaks = [matmul_peak(dtype)] if on_cpu else []
    r = bench_jax(config, a.batch, a.inputs, a.targets, a.steps, a.warmup)
    mc = r.pop("model_cfg")
    if on_cpu:
        peaks.append(matmul_peak(dtype))
        peak = max(peaks)
        r["mfu"] = r["model_tflops_per_step"] * 1e12 / r["step_time_s"] / peak
        print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; measured {dtype} matmul peak {peak / 1e9:.0f} GFLOP/s "
              f"(before/after the steps: {', '.join(f'{p / 1e9:.0f}' for p in peaks)})")
    mfu = f"{100 * r['mfu']:.1f}%" + (" of the measured peak" if on_cpu else "") if r["mfu"] is not None else "n/a"
    print(f"t5x_lite  {a.config}: {r['params'] / 1e6:.1f}M params, {mc.dtype}, batch {a.batch} x "
          f"({a.inputs} + {a.targets}) tokens, {r['devices']}")
    print(f"  step {r['step_time_s']:.3f} s   {r['tokens_per_s']:.0f} tokens/s   MFU {mfu}   "
          f"({r['model_tflops_per_step']:.3f} model TFLOP/step; compile+warm-up {r['compile_and_warmup_s']:.1f} s)")
    if a.vs_hf:
        if mc.architecture != "encoder_decoder":
            raise SystemExit("--vs-hf supports encoder_decoder configs only")
        h = bench_hf(mc, str(config.optimizer.name), a.batch, a.inputs, a.targets, a.steps, a.warmup,
                     mc.dtype == "bfloat16")
        print(f"HF torch  T5ForConditionalGeneration: {h['params'] / 1e6:.1f}M params, same batch/lengths, "
              f"{config.optimizer.name}")
        print(f"  step {h['step_time_s']:.3f} s   {a.batch * (a.inputs + a.targets) / h['step_time_s']:.0f} tokens/s")
        print(f"  speed-up t5x_lite / HF: {h['step_time_s'] / r['step_time_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
