"""`t5x-lite train --compile-only [--target KIND:N] [--memory_budget_gb G]`: will this config fit
on that mesh, what does it communicate, what would a step cost?  Nothing is initialised and
no data is read.

    t5x-lite train --config configs/t5_1_1.py:large --compile-only --target tpu-v4:16 \\
        --config.mesh.data=1 --config.mesh.fsdp=-1

* The train state (params, optimizer state, step) and one global batch are ShapeDtypeStructs
  (jax.eval_shape) carrying the shardings that `partitioning.LOGICAL_AXIS_RULES` gives them.
* The real train step and eval step (train/step.py) are lowered and compiled for the mesh.
* Per device: parameter and optimizer-state bytes (from the shardings), the compiled
  program's argument / output / temporary bytes (`compiled.memory_analysis()`), and whether
  the peak (arguments + outputs - donated + temporaries) fits the budget.
* The collectives in the compiled HLO (train/hlo_stats.py) with their per-device result bytes.
* FLOPs per step (models/flops.py) and the step time *predicted* at PREDICT_MFU of the target's
  datasheet peak (train/metrics.py PEAK_FLOPS); no prediction for CPU (no CPU peak is assumed).

Targets: `cpu:N` compiles on N emulated CPU devices (budget: this host's RAM / N).  For a TPU
or GPU target, a topology JAX can describe without the hardware (jax.experimental.topologies,
needs libtpu for TPUs) is used; otherwise one line says it cannot, and the step is compiled on
N emulated CPU devices with its memory checked against the chip's HBM (TARGETS below).  That is
the CPU compiler's memory, not the accelerator's: XLA:TPU/GPU fuse, schedule and lay out
differently, so treat a tight fit as unknown.  The number of CPU devices is fixed when JAX
starts: if this process already runs JAX with another count, the command re-runs itself in a
subprocess with JAX_NUM_CPU_DEVICES=N.

Exit 0 if the train and eval steps fit, 3 (`DoesNotFit`) with one line naming the largest
buffer if not.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import time

from t5x_lite.errors import UserError

PREDICT_MFU = 0.40   # the stated MFU of the predicted step time (MaxText-class training reaches 40-60%)
NO_REEXEC_ENV = "T5X_LITE_COMPILE_ONLY_CHILD"   # set in the re-run subprocess: never re-run twice

# --target kind -> (HBM bytes per chip, key of train/metrics.py PEAK_FLOPS, description).
# Published per-chip capacities (Google Cloud TPU system architecture pages; NVIDIA H100/H200 SXM
# datasheets).  A TPU "v4-32" slice is 16 chips (the suffix counts TensorCores, 2 per v4 chip).
TARGETS = {
    "tpu-v4": (32 * 2 ** 30, "tpu v4", "TPU v4 (32 GiB HBM2)"),
    "tpu-v5e": (16 * 2 ** 30, "tpu v5e", "TPU v5e (16 GiB HBM2)"),
    "tpu-v5p": (95 * 2 ** 30, "tpu v5p", "TPU v5p (95 GiB HBM2e)"),
    "tpu-v6e": (32 * 2 ** 30, "tpu v6", "TPU v6e (32 GiB HBM)"),
    "h100": (80 * 10 ** 9, "h100", "H100 SXM (80 GB HBM3)"),
    "h200": (141 * 10 ** 9, "h200", "H200 SXM (141 GB HBM3e)"),
    "cpu": (None, None, "emulated CPU device (budget: host RAM / N)"),
}


class DoesNotFit(UserError):
    """The compiled step needs more memory per device than the budget: exit 3."""
    exit_code = 3


def parse_target(target: str | None) -> tuple[str, int | None]:
    """'tpu-v4:16' -> ('tpu-v4', 16); None -> ('cpu', None) = the devices this process has."""
    if not target:
        return "cpu", None
    kind, _, n = target.partition(":")
    kind = kind.lower()
    if kind not in TARGETS or not n.isdigit() or int(n) < 1:
        raise UserError(f"--target {target!r}: expected KIND:N with KIND one of {', '.join(TARGETS)} "
                        "and N chips >= 1, e.g. tpu-v4:16 or cpu:8")
    return kind, int(n)


# ----------------------------------------------------------------------------
# Devices
# ----------------------------------------------------------------------------

def _topology_devices(kind: str, n: int):
    """(devices of a TPU/GPU topology JAX describes without the hardware, None) or (None, why not)."""
    from jax.experimental import topologies
    if kind.startswith("tpu"):
        if importlib.util.find_spec("libtpu") is None:
            return None, "JAX TPU support (libtpu) is not installed"
        x = 2 if n % 2 == 0 else 1
        y = 2 if n % (2 * x) == 0 else 1
        name = f"{kind[4:]}:{x}x{y}x{n // (x * y)}"
        platform = "tpu"
    else:
        name, platform = f"1x{n}x1", "cuda"
    try:
        return list(topologies.get_topology_desc(platform=platform, topology_name=name).devices), None
    except Exception as e:  # noqa: BLE001  (jax raises RuntimeError, NotImplementedError, ...)
        return None, f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"


def _cpu_devices(n: int | None):
    """N CPU devices of this process, or None when JAX already runs with another count."""
    import jax
    from jax._src import xla_bridge
    if n is not None and not xla_bridge.backends_are_initialized():
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", n)
    devices = jax.devices()
    if n is not None and (len(devices) != n or devices[0].platform != "cpu"):
        return None
    return devices


def _rerun_with_cpu_devices(n: int, argv) -> int:
    if os.environ.get(NO_REEXEC_ENV):
        raise UserError(f"--target: could not get {n} emulated CPU devices (JAX started with "
                        f"{os.environ.get('JAX_NUM_CPU_DEVICES')})")
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(n), **{NO_REEXEC_ENV: "1"})
    return subprocess.call([sys.executable, "-m", "t5x_lite", "train", *argv], env=env)


# ----------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------

def _per_device_bytes(sds) -> int:
    import numpy as np
    shape = sds.sharding.shard_shape(sds.shape) if sds.sharding is not None else sds.shape
    return int(math.prod(shape)) * np.dtype(sds.dtype).itemsize


def _path(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def abstract_batch(config, architecture: str, mesh):
    """One global batch as ShapeDtypeStructs sharded over (data, fsdp): the feature converter's
    own arrays for one synthetic example, with the batch size of the config."""
    import jax
    import numpy as np

    from t5x_lite import partitioning  # lazy: jax after the device count
    from t5x_lite.data.feature_converters import Packer, get_feature_converter  # lazy: jax after the device count
    from t5x_lite.data.tasks import get_task_or_mixture  # lazy: jax after the device count

    lengths = {k: int(v) for k, v in dict(config.data.feature_lengths).items()}
    has_inputs = get_task_or_mixture(config.data.task).has_inputs
    converter = get_feature_converter(architecture, has_inputs, lengths)
    tokens = np.arange(3, 6, dtype=np.int32)
    packer = Packer(converter.stacks, 1, True)
    # BERT's features too (token types, NSP and class labels): the converters keep what their batches have
    packer.try_add(converter.prepare({"inputs": tokens, "targets": tokens, "token_type_ids": np.zeros(3, np.int32),
                                      "nsp_label": 0, "class_label": 0}))
    one = converter.finalize(packer.emit())
    sharding = partitioning.batch_sharding(mesh)
    b = int(config.data.batch_size)
    return {k: jax.ShapeDtypeStruct((b,) + v.shape[1:], v.dtype, sharding=sharding) for k, v in one.items()}


def decode_program(bundle, model_cfg, config, mesh):
    """(jitted greedy decode of one batch, abstract prompt, new tokens) as evaluation by generation
    runs it (KV cache, inputs-length prompts, targets-length answers), or None for an encoder-only
    model."""
    import jax
    import jax.numpy as jnp

    from t5x_lite import decoding, partitioning  # lazy: jax after the device count

    if model_cfg.architecture not in ("encoder_decoder", "decoder_only"):
        return None
    lengths = {k: int(v) for k, v in dict(config.data.feature_lengths).items()}
    prompt_len = lengths.get("inputs") or lengths["targets"]
    new_tokens = decoding.fit_decode_length(model_cfg, prompt_len, lengths.get("targets", prompt_len))
    b, sharding = int(config.data.batch_size), partitioning.batch_sharding(mesh)
    tokens = jax.ShapeDtypeStruct((b, prompt_len), jnp.int32, sharding=sharding)
    if model_cfg.architecture == "encoder_decoder":
        prompt = {"encoder_input_tokens": tokens}
    else:
        prompt = {"decoder_prompt_tokens": tokens,
                  "prompt_lengths": jax.ShapeDtypeStruct((b,), jnp.int32, sharding=sharding)}

    def greedy(params, prompt):
        model = bundle.merge(params)
        logits0, state = decoding.init_decode_state(model, prompt, new_tokens)
        return decoding.greedy_search(logits0, state, lambda st, t: decoding.decode_step(model, st, t),
                                      max_decode_length=new_tokens)
    return jax.jit(greedy), prompt, new_tokens


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp")}
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out


def compile_report(config, kind: str = "cpu", devices=None) -> dict:
    """Compile config's train and eval steps for its mesh over `devices`; the report as a dict."""
    import jax

    from t5x_lite import partitioning  # lazy: jax after the device count
    from t5x_lite.models.flops import flops_per_step  # lazy: jax after the device count
    from t5x_lite.train import config as config_lib  # lazy: jax after the device count
    from t5x_lite.train import metrics, optimizers  # lazy: jax after the device count
    from t5x_lite.train import step as step_lib  # lazy: jax after the device count
    from t5x_lite.train import hlo_stats  # lazy: jax after the device count

    model_cfg, _ = config_lib.resolve(config)
    tc = config.train
    devices = list(jax.devices() if devices is None else devices)
    mesh = partitioning.make_mesh(config.mesh, devices)
    partitioning.check_batch_divisible(int(config.data.batch_size), mesh, int(tc.num_microbatches))
    bundle = step_lib.bundle_from_config(model_cfg)
    tx, schedule = optimizers.make_optimizer(config.optimizer, int(tc.num_steps), grad_clip=float(tc.grad_clip))
    abstract, specs = step_lib.state_specs(bundle, tx, mesh)      # jax.eval_shape: nothing initialised
    shardings = partitioning.named(mesh, specs)
    state = step_lib.abstract_with_shardings(abstract, shardings)
    classifier = model_cfg.architecture == "encoder_only" and model_cfg.num_classes > 0   # data/classification.py
    batch = abstract_batch(config, "encoder_classifier" if classifier else model_cfg.architecture, mesh)
    train_step = step_lib.make_train_step(
        bundle, tx, schedule, mesh=mesh, state_shardings=shardings, z_loss=float(tc.z_loss),
        label_smoothing=float(tc.label_smoothing), loss_normalization=str(tc.loss_normalization),
        num_microbatches=int(tc.num_microbatches))
    eval_step = step_lib.make_eval_step(bundle, mesh=mesh, params_shardings=shardings["params"],
                                        z_loss=float(tc.z_loss))

    t0 = time.perf_counter()
    train_c, remats = hlo_stats.compile_counting_remats(train_step.lower(state, batch))
    t1 = time.perf_counter()
    eval_c, _ = hlo_stats.compile_counting_remats(eval_step.lower(state["params"], batch))
    t2 = time.perf_counter()
    program = decode_program(bundle, model_cfg, config, mesh)
    decode_c, new_tokens = None, 0
    if program is not None:
        greedy, prompt, new_tokens = program
        with partitioning.activate(mesh):      # the decode runs under the training mesh's rules
            decode_c = greedy.lower(state["params"], prompt).compile()
    t3 = time.perf_counter()
    hlo = train_c.as_text()

    leaves = [(f"{_path(p)} {x.dtype}{list(x.shape)}", _per_device_bytes(x))
              for p, x in jax.tree_util.tree_flatten_with_path(state)[0]]
    biggest_leaf = max(leaves, key=lambda kv: kv[1])
    biggest_op = hlo_stats.largest_instruction(hlo)
    lengths = {k: int(v) for k, v in dict(config.data.feature_lengths).items()}
    flops = flops_per_step(model_cfg, int(config.data.batch_size), lengths.get("inputs", 0),
                           lengths.get("targets", 0))
    hbm, peak_key, desc = TARGETS[kind]
    peak = metrics.peak_flops_per_device(peak_key, model_cfg.dtype) if peak_key else None
    n = len(devices)
    if hbm is None and devices[0].platform == "cpu":
        hbm = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // n
    return {
        "target": kind, "target_desc": desc, "num_devices": n, "platform": devices[0].platform,
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "params": int(sum(math.prod(x.shape) for x in jax.tree.leaves(abstract["params"]))),
        "batch": int(config.data.batch_size), "feature_lengths": lengths,
        "params_bytes": sum(_per_device_bytes(x) for x in jax.tree.leaves(state["params"])),
        "opt_state_bytes": sum(_per_device_bytes(x) for x in jax.tree.leaves(state["opt_state"])),
        "checkpoint_bytes": int(sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(abstract))),
        "train": _memory(train_c), "eval": _memory(eval_c),
        "decode": _memory(decode_c) if decode_c is not None else {}, "decode_new_tokens": new_tokens,
        "budget_bytes": hbm,
        "largest_state_buffer": biggest_leaf,
        "largest_temp_buffer": biggest_op,
        "collectives": hlo_stats.collectives(hlo), "full_remats": remats,
        "flops_per_step": flops, "peak_flops": peak, "mfu": PREDICT_MFU,
        "predicted_step_s": flops / (n * peak * PREDICT_MFU) if peak else None,
        "compile_s": {"train": round(t1 - t0, 1), "eval": round(t2 - t1, 1), "decode": round(t3 - t2, 1)},
    }


def _gib(b) -> str:
    return "n/a" if b is None else (f"{b / 2 ** 30:.2f} GiB" if b >= 2 ** 30 else f"{b / 2 ** 20:.1f} MiB")


def _secs(s: float) -> str:
    return f"{s:.3f} s" if s >= 1 else f"{s * 1e3:.3g} ms"


STEPS = ("train", "eval", "decode")   # the compiled programs whose peak must fit


def fits(report) -> bool:
    budget = report["budget_bytes"]
    return budget is None or all(report[s].get("peak", 0) <= budget for s in STEPS)


def format_report(r, note: str | None = None) -> str:
    tr, ev = r["train"], r["eval"]
    lines = [f"compile-only: {r['params'] / 1e6:.2f}M params; mesh {r['mesh']} on {r['num_devices']} "
             f"{r['platform']} devices; batch {r['batch']} x {r['feature_lengths']}"]
    if note:
        lines.append(f"  note: {note}")
    lines += [
        f"  per device: params {_gib(r['params_bytes'])}, optimizer state {_gib(r['opt_state_bytes'])}",
        f"  train step per device: arguments {_gib(tr.get('argument'))}, outputs {_gib(tr.get('output'))} "
        f"(donated {_gib(tr.get('alias'))}), temporaries {_gib(tr.get('temp'))}; peak {_gib(tr.get('peak'))}",
        f"  eval step per device: arguments {_gib(ev.get('argument'))}, temporaries {_gib(ev.get('temp'))}; "
        f"peak {_gib(ev.get('peak'))}",
        (f"  decode (greedy, KV cache, {r['decode_new_tokens']} new tokens) per device: arguments "
         f"{_gib(r['decode'].get('argument'))}, temporaries {_gib(r['decode'].get('temp'))}; "
         f"peak {_gib(r['decode'].get('peak'))}" if r["decode"] else "  decode: none (encoder-only model)"),
        f"  budget per device: {_gib(r['budget_bytes'])} ({r['target_desc']}): "
        f"{'fits' if fits(r) else 'DOES NOT FIT'}",
        "  collectives in the train step (instructions, per-device result bytes; loop bodies once; "
        "XLA:CPU has no reduce-scatter, it all-reduces and slices): " +
        ", ".join(f"{k} {v['count']} / {_gib(v['bytes'])}" for k, v in r["collectives"].items()),
        f"  full rematerializations reported by the SPMD partitioner: {r['full_remats']}",
        f"  checkpoint (params + optimizer state, all devices): {_gib(r['checkpoint_bytes'])}",
    ]
    if r["predicted_step_s"]:
        lines.append(f"  FLOPs per step {r['flops_per_step']:.3e}; predicted step time at {r['mfu']:.0%} MFU of "
                     f"{r['num_devices']} x {r['peak_flops'] / 1e12:.0f} TFLOP/s: {_secs(r['predicted_step_s'])} "
                     "(predicted, not measured)")
    else:
        lines.append(f"  FLOPs per step {r['flops_per_step']:.3e}; no step time predicted for {r['target']} "
                     "(no peak FLOP/s is assumed for CPU)")
    lines.append(f"  compile time: train {r['compile_s']['train']} s, eval {r['compile_s']['eval']} s, "
                 f"decode {r['compile_s']['decode']} s")
    return "\n".join(lines)


def not_fit_line(r) -> str:
    step = max(STEPS, key=lambda s: r[s].get("peak", 0))
    leaf, leaf_bytes = r["largest_state_buffer"]
    op = r["largest_temp_buffer"]
    if op is not None and op[2] > leaf_bytes:
        largest = f"temporary {op[0]} {op[1]} ({_gib(op[2])})"
    else:
        largest = f"{leaf} ({_gib(leaf_bytes)} per device)"
    return (f"does not fit: the {step} step needs {_gib(r[step]['peak'])} per device, the budget is "
            f"{_gib(r['budget_bytes'])} ({r['target_desc']}); largest buffer: {largest}")


def run(config, target: str | None, budget_gb: float | None, argv) -> int:
    """The --compile-only command: print the report; 0 if it fits, DoesNotFit (exit 3) if not."""
    kind, n = parse_target(target)
    if budget_gb is not None and budget_gb <= 0:
        raise UserError(f"--memory_budget_gb must be positive, got {budget_gb}")
    devices, note = None, None
    if kind != "cpu":
        devices, why = _topology_devices(kind, n)
        if devices is None:
            note = (f"this JAX cannot describe a {kind} topology without the hardware ({why}); compiled on "
                    f"{n} emulated CPU devices instead: the memory below is the CPU compile's, checked "
                    f"against {TARGETS[kind][2]}")
    if devices is None:
        devices = _cpu_devices(n)
        if devices is None:
            return _rerun_with_cpu_devices(n, argv)
    report = compile_report(config, kind, devices)
    if budget_gb is not None:
        report["budget_bytes"] = int(budget_gb * 2 ** 30)
        report["target_desc"] = f"--memory_budget_gb {budget_gb:g}"
    print(format_report(report, note), flush=True)
    if not fits(report):
        raise DoesNotFit(not_fit_line(report))
    return 0
