"""Metric logging (metrics.jsonl + TensorBoard, the progress bar), best-checkpoint
tracking, and MFU.

MFU = model FLOPs per step / step time / (peak FLOP/s per device x devices).
Model FLOPs come from t5x_lite.models.flops (6 x params x tokens plus attention,
as MaxText counts them); the peak table below holds the vendors' dense bf16 (and
f32 where it differs) peaks per accelerator.  There is no CPU row: a CPU's peak
depends on the model, its vector units and what else runs, so on CPU `mfu` is
left out and tools/bench_train.py measures a matmul peak in the same run instead.

Units: every accuracy t5x-lite logs is a percentage (0-100), the T5/seqio convention for task
metrics and the unit of the T5 paper's tables.  The train and eval steps compute per-token
accuracies as fractions; `as_logged` converts them where rows are written, and names the
teacher-forced one `token_accuracy` (`eval/token_accuracy`) so it is not mistaken for a task's
`eval/<task>/accuracy` (exact match of the decoded outputs).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import re
import sys
import time
from typing import Any, Mapping

import jax
from tqdm import tqdm

from t5x_lite import checkpoints, jsonio
from t5x_lite.errors import UserError, ensure_dir
from t5x_lite.models.flops import flops_per_step

# device_kind substring (lower case) -> peak FLOP/s per device, by compute dtype: the vendors'
# dense (no sparsity) datasheet peaks.  No CPU entry (see the module docstring).
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("h200", {"bfloat16": 989e12, "float32": 67e12}),
    ("h100", {"bfloat16": 989e12, "float32": 67e12}),
    ("a100", {"bfloat16": 312e12, "float32": 19.5e12}),
    ("tpu v6", {"bfloat16": 918e12, "float32": 918e12}),   # v6e (Trillium)
    ("tpu v5p", {"bfloat16": 459e12, "float32": 459e12}),
    ("tpu v5 lite", {"bfloat16": 197e12, "float32": 197e12}),  # v5e reports "TPU v5 lite"
    ("tpu v5e", {"bfloat16": 197e12, "float32": 197e12}),
    ("tpu v5", {"bfloat16": 459e12, "float32": 459e12}),
    ("tpu v4", {"bfloat16": 275e12, "float32": 275e12}),
)


def peak_flops_per_device(device_kind: str, dtype: str = "bfloat16") -> float | None:
    kind = device_kind.lower()
    for key, peaks in PEAK_FLOPS:
        if key in kind:
            return peaks.get(dtype, peaks["bfloat16"])
    return None


def device_peak(dtype: str = "bfloat16") -> float | None:
    """Datasheet peak FLOP/s of this process's accelerator kind; None on CPU or an unknown chip."""
    dev = jax.devices()[0]
    return None if dev.platform == "cpu" else peak_flops_per_device(dev.device_kind, dtype)


def mfu(flops_per_step: float | None, step_time_s: float, dtype: str = "bfloat16") -> float | None:
    peak = device_peak(dtype)
    if not flops_per_step or not peak or step_time_s <= 0:
        return None
    return flops_per_step / step_time_s / (peak * jax.device_count())


def model_flops_per_step(model_cfg, batch_size: int, feature_lengths: Mapping[str, int]) -> float | None:
    """Training FLOPs (forward + backward = 3 x forward) of one step, from t5x_lite.models.flops."""
    fl = dict(feature_lengths)
    return float(flops_per_step(model_cfg, batch_size, int(fl.get("inputs", 0)), int(fl.get("targets", 0))))


def as_logged(metrics: Mapping[str, Any], prefix: str = "") -> dict:
    """A step's metrics as they are logged: `accuracy` (the step's teacher-forced per-token
    fraction) becomes `token_accuracy`, and every `*accuracy` is in percent (module docstring)."""
    out = {}
    for name, value in metrics.items():
        name = "token_accuracy" if name == "accuracy" else name
        if name.endswith("accuracy") and value is not None:
            value = 100.0 * float(value)
        out[prefix + name] = value
    return out


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; values other than str/bool/int/float as compact JSON."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_config(value, name + "."))
        elif isinstance(value, (str, bool, int, float)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


# The metrics the TensorBoard HPARAMS tab shows beside the config (tags of the scalars written here).
HPARAMS_METRICS = ("train/loss", "eval/loss", "eval/token_accuracy")


class MetricsWriter:
    """Appends one JSON object per logged step to DIR/metrics.jsonl and mirrors scalars
    to TensorBoard event files in DIR.  Only process 0 writes."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        self._f = None
        if enabled:
            path = os.path.join(ensure_dir(workdir, "workdir"), "metrics.jsonl")
            try:
                self._f = open(path, "a", buffering=1)
            except OSError as e:
                raise UserError(f"cannot append to {path}: {e.strerror}") from None
            try:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(logdir=workdir, flush_secs=10)
            except Exception:  # TensorBoard is a nicety; metrics.jsonl is the record
                self._tb = None

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step)}
        row.update({k: v for k, v in metrics.items() if v is not None})
        # JSON has no NaN/Inf: a diverged value is written as null and named under "nonfinite".
        line = jsonio.dumps(row)
        self._f.write(line + "\n")
        if self._tb is not None:
            for k, v in json.loads(line).items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k if "/" in k else f"train/{k}", v, int(step))

    def write_config(self, step: int, config: Mapping[str, Any]) -> None:
        """The resolved config into the TensorBoard events: as text (tag `config`, the JSON in a
        code block) and as hparams (one entry per flattened key, for the HPARAMS tab)."""
        if not self.enabled or self._tb is None:
            return
        from tensorboardX.summary import hparams
        text = jsonio.dumps(config, flag=False, indent=2, sort_keys=True, default=str)
        self._tb.add_text("config", "```\n" + text + "\n```", global_step=int(step))
        experiment, session_start, _ = hparams(flat_config(config), {k: None for k in HPARAMS_METRICS})
        writer = self._tb._get_file_writer()
        writer.add_summary(experiment, int(step))
        writer.add_summary(session_start, int(step))
        self._tb.flush()

    def flush(self) -> None:
        if self._f:
            self._f.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._f:
            self._f.close()
            self._f = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def log_line(msg: str) -> None:
    """One line on stderr from process 0 (through tqdm, so it does not collide with the progress bar)."""
    if jax.process_index() == 0:
        tqdm.write(msg, file=sys.stderr)


class TrainLogger:
    """Per-step metrics stay on the device until a log step, so logging never adds a device sync
    to ordinary steps.  `flush` fetches them, writes the log-step rows (plus step time, tokens/s,
    MFU) and returns None, or (step, loss, grad_norm) of the first non-finite step."""

    def __init__(self, workdir: str, model_cfg, data_cfg, num_steps: int, start: int, log_every: int,
                 show_progress: bool = True, progress=None, config: Mapping[str, Any] | None = None):
        self.writer = MetricsWriter(workdir, enabled=jax.process_index() == 0)
        if config is not None:   # the resolved config, for TensorBoard's TEXT and HPARAMS tabs
            self.writer.write_config(start, config)
        self.num_steps, self.log_every, self.dtype = num_steps, log_every, model_cfg.dtype
        lengths = dict(data_cfg.feature_lengths)
        self.tokens_per_step = int(data_cfg.batch_size) * sum(int(v) for v in lengths.values())
        self.flops = model_flops_per_step(model_cfg, int(data_cfg.batch_size), lengths)
        self.pending: list[tuple[int, Any]] = []
        self.progress, self._own_bar = progress, progress is None
        if progress is None and show_progress and jax.process_index() == 0:
            self.progress = tqdm(total=num_steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
                                 mininterval=1.0, file=sys.stderr)
        self.restart_clock()

    def restart_clock(self) -> None:
        self._t_last, self._steps = time.perf_counter(), 0

    def append(self, step: int, metrics) -> None:
        self.pending.append((step, metrics))
        self._steps += 1
        if self.progress is not None:
            self.progress.update(1)

    def write(self, step: int, row: Mapping[str, Any]) -> None:
        self.writer.write(step, row)

    def flush(self):
        if not self.pending:
            return None
        fetched = jax.device_get([m for _, m in self.pending])
        now = time.perf_counter()
        step_time = (now - self._t_last) / max(self._steps, 1)
        self.restart_clock()
        steps = [s for s, _ in self.pending]
        self.pending.clear()
        for s, m in zip(steps, fetched):
            if not bool(m["finite"]):   # its row is written too (null + "nonfinite"), then the run stops
                row = as_logged({k: float(v) for k, v in m.items() if k != "finite"})
                if not jsonio.nonfinite_paths(row):   # loss and gradient finite: the update broke the params
                    row[jsonio.NONFINITE_KEY] = ["params"]
                self.writer.write(s, row)
                self.writer.flush()
                return s, float(m["loss"]), float(m["grad_norm"])
            if s % self.log_every == 0 or s == self.num_steps:
                row = as_logged({k: float(v) for k, v in m.items() if k != "finite"})
                row["step_time_s"] = step_time
                row["tokens_per_s"] = self.tokens_per_step / step_time if step_time > 0 else None
                row["mfu"] = mfu(self.flops, step_time, self.dtype)
                self.writer.write(s, row)
                if self.progress is not None:
                    self.progress.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}",
                                              refresh=False)
        if steps[-1] % self.log_every == 0:
            self.writer.flush()
        return None

    def close(self) -> None:
        if self.progress is not None and self._own_bar:
            self.progress.close()
        self.writer.close()


def higher_is_better(name: str) -> bool:
    return not re.search(r"loss|perplexity|error|ppl", name.lower())


class BestTracker:
    """Best value and step per eval metric in WORKDIR/best_checkpoints.json; for evaluator
    metrics the params of the best step are also kept, params-only, in WORKDIR/best/<metric>/."""

    def __init__(self, workdir: str, resolved_config: dict):
        self.workdir, self.config = workdir, resolved_config
        self.path = os.path.join(workdir, "best_checkpoints.json")
        self.best = {}
        if os.path.exists(self.path):
            try:
                with open(self.path) as f:
                    self.best = json.load(f)
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read {self.path} ({type(e).__name__}: {e}); move it away to start "
                                "best-checkpoint tracking afresh") from None
            if not isinstance(self.best, dict):
                raise UserError(f"{self.path} does not hold a JSON object; move it away to start afresh")

    def update(self, step: int, results: Mapping[str, Any], evaluator_keys, params) -> None:
        changed = False
        for name, value in results.items():
            if not isinstance(value, float) or not math.isfinite(value):
                continue
            old, up = self.best.get(name), higher_is_better(name)
            if old is not None and not (value > old["value"] if up else value < old["value"]):
                continue
            entry = {"value": value, "step": step, "higher_is_better": up}
            if name in evaluator_keys:
                sub = os.path.join(self.workdir, "best", re.sub(r"[^A-Za-z0-9_.-]+", "_", name.removeprefix("eval/")))
                checkpoints.save_best_params(sub, params, self.config, step)
                entry["checkpoint"] = os.path.relpath(sub, self.workdir)
            self.best[name] = entry
            changed = True
        if changed and jax.process_index() == 0:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                jsonio.dump(self.best, f, indent=2, sort_keys=True)
            os.replace(tmp, self.path)


def run_summary(workdir: str, ckpt_dir: str, start: int, step: int, wall_s: float, best: Mapping[str, Any],
                eval_tasks=()) -> list[str]:
    """The lines printed when a run ends: what it did, where it ended, its best results and the
    command to run next (read back from metrics.jsonl, so a resumed run reports the whole run)."""
    rows = []
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.endswith("\n")]
    train = [r for r in rows if r.get("loss") is not None and r.get("step", 0) <= step]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r) and r.get("step", 0) <= step]
    lines = [f"done at step {step} ({step - start} steps in {_duration(wall_s)}); checkpoints in {ckpt_dir}"]
    if train:
        lines.append(f"  train loss {train[-1]['loss']:.4f} at step {train[-1]['step']}")
    if evals:
        shown = {k: v for k, v in evals[-1].items() if k.startswith("eval/") and isinstance(v, (int, float))}
        lines.append(f"  eval at step {evals[-1]['step']}: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items())))
    with_ckpt = {k: v for k, v in best.items() if "checkpoint" in v}
    for name, entry in sorted(with_ckpt.items())[:4]:
        lines.append(f"  best {name} {entry['value']:.4g} at step {entry['step']}: "
                     f"{os.path.join(workdir, entry['checkpoint'])}")
    if with_ckpt and eval_tasks:
        name, entry = sorted(with_ckpt.items())[0]
        lines.append(f"  next: t5x-lite eval --checkpoint {shlex.quote(os.path.join(workdir, entry['checkpoint']))} "
                     f"--task {shlex.quote(str(eval_tasks[0]))} --output {shlex.quote(os.path.join(workdir, 'eval'))}")
    else:
        lines.append(f"  next: t5x-lite infer --checkpoint {shlex.quote(workdir)} --input PROMPTS.jsonl --output - "
                     f"(one {{\"inputs\": ...}} per line), or fine-tune with "
                     f"--config.init_checkpoint={shlex.quote(workdir)}")
    return lines


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m} min" if h else f"{m} min {s} s" if m else f"{s} s"
