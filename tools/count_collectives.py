"""Collectives in the trainer's compiled train step, without and with the
sharding context, and the step time of each (docs/sharding.md).

    python tools/count_collectives.py                      # d_model 256, 4+4 layers, batch 16, 128/32
    python tools/count_collectives.py --reps 10 --json out.json

"off" is the train step traced outside `partitioning.activate(mesh)` (what every
production path did before the sharding context was entered: params and batch
sharded by the jit's in_shardings, activations left to the partitioner's
propagation); "on" is the step as `train/loop.py` runs it, inside the context,
with the activation constraints of `partitioning.LOGICAL_AXIS_RULES`.  Both are
compiled ahead of time from the same `step.make_train_step` (the partitioner's
"Involuntary full rematerialization" reports are counted, not printed), and timed in
interleaved repetitions (on, off, on, off, ...) on the same state, so load on
the machine hits both alike.  Counts are static: instructions in the
optimized HLO text (a collective inside a loop body counts once); "MiB out" adds up
the per-device result sizes of those instructions, a rough measure of traffic.

On a CPU host the devices are emulated (XLA_FLAGS / JAX_NUM_CPU_DEVICES), so the
times say nothing about a real accelerator mesh; the counts do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

# the parsing lives in t5x_lite/train/hlo_stats.py (shared with `t5x-lite train --compile-only`)
from t5x_lite.train.hlo_stats import (COLLECTIVES, compile_counting_remats,
                                      count_collectives, count_constraints)


def _parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mesh", default="2,2,2", help="data,fsdp,tensor (default 2,2,2)")
    p.add_argument("--d_model", type=int, default=256)
    p.add_argument("--num_heads", type=int, default=4)
    p.add_argument("--d_kv", type=int, default=64)
    p.add_argument("--d_ff", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4, help="encoder and decoder layers each")
    p.add_argument("--vocab", type=int, default=32128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--inputs", type=int, default=128)
    p.add_argument("--targets", type=int, default=32)
    p.add_argument("--reps", type=int, default=5, help="timed steps per variant (after 1 warm-up each)")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args()


def main():
    args = _parse()
    mesh_shape = [int(x) for x in args.mesh.split(",")]
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(mesh_shape[0] * mesh_shape[1] * mesh_shape[2]))

    import jax
    import numpy as np

    from t5x_lite import partitioning
    from t5x_lite.models import ModelConfig
    from t5x_lite.train import optimizers, step as step_lib

    cfg = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, num_heads=args.num_heads, d_kv=args.d_kv,
                      d_ff=args.d_ff, num_encoder_layers=args.layers, num_decoder_layers=args.layers)
    mesh = partitioning.make_mesh(dict(zip(partitioning.MESH_AXES, mesh_shape)))
    partitioning.check_batch_divisible(args.batch, mesh)
    bundle = step_lib.bundle_from_config(cfg)
    tx, schedule = optimizers.make_optimizer({"name": "adafactor", "schedule": "constant",
                                              "learning_rate": 0.01}, 100)
    abstract, specs = step_lib.state_specs(bundle, tx, mesh)
    shardings = partitioning.named(mesh, specs)
    train_step = step_lib.make_train_step(bundle, tx, schedule, mesh=mesh, state_shardings=shardings)

    rng = np.random.default_rng(0)
    tgt = rng.integers(2, args.vocab, (args.batch, args.targets)).astype(np.int32)
    batch = partitioning.global_batch({
        "encoder_input_tokens": rng.integers(2, args.vocab, (args.batch, args.inputs)).astype(np.int32),
        "decoder_input_tokens": np.concatenate([np.zeros((args.batch, 1), np.int32), tgt[:, :-1]], 1),
        "decoder_target_tokens": tgt,
        "decoder_loss_weights": np.ones_like(tgt, np.float32),
    }, mesh)
    state_spec = step_lib.abstract_with_shardings(abstract, shardings)

    variants = {}
    for name, fn in (("off", train_step.jitted), ("on", train_step)):
        lowered = fn.lower(state_spec, batch)
        t0 = time.perf_counter()
        compiled, remats = compile_counting_remats(lowered)
        counts, size = count_collectives(compiled.as_text())
        variants[name] = {"compiled": compiled, "constraints": count_constraints(lowered.as_text()),
                          "collectives": counts, "mib": round(size / 2 ** 20, 2), "remats": remats,
                          "compile_s": time.perf_counter() - t0, "times": []}

    state = step_lib.init_state(bundle, tx, shardings, seed=0)
    for rep in range(args.reps + 1):                      # rep 0 warms both up
        for name in ("on", "off"):
            t0 = time.perf_counter()
            state, metrics = variants[name]["compiled"](state, batch)
            jax.block_until_ready((state, metrics))
            if rep:
                variants[name]["times"].append(time.perf_counter() - t0)

    rows = {}
    for name, v in variants.items():
        rows[name] = dict(v["collectives"], mib=v["mib"], constraints=v["constraints"], remats=v["remats"],
                          compile_s=round(v["compile_s"], 2),
                          step_s_median=round(statistics.median(v["times"]), 4),
                          step_s_min=round(min(v["times"]), 4))
    header = (["context"] + list(COLLECTIVES) +
              ["MiB out", "constraints", "full remats", "step s (median)", "step s (min)"])
    print(f"model d_model={args.d_model} layers={args.layers}+{args.layers} heads={args.num_heads} "
          f"d_ff={args.d_ff} vocab={args.vocab}; batch {args.batch}, lengths {args.inputs}/{args.targets}; "
          f"mesh {dict(mesh.shape)}; {args.reps} interleaved reps")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in ("off", "on"):
        r = rows[name]
        cells = [name] + [str(r[k]) for k in COLLECTIVES + ("mib", "constraints", "remats", "step_s_median",
                                                             "step_s_min")]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
