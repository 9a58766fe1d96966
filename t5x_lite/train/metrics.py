"""Metric logging (metrics.jsonl + TensorBoard) and MFU.

MFU = model FLOPs per step / step time / (peak FLOP/s per device x devices).
Model FLOPs come from t5x_lite.models.flops (6 x params x tokens plus attention,
as MaxText counts them); the peak table below holds dense bf16 (and f32 where it
differs) matmul peaks per device.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

# device_kind substring (lower case) -> peak FLOP/s per device, by compute dtype.
# Accelerators: vendor dense (no sparsity) peaks.  CPU: measured here, a jitted
# 2048^3 matmul on the 2-core machine (shared/reference/VERIFIED_HERE.md).
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
    ("cpu", {"bfloat16": 106e9, "float32": 110e9}),
)


def peak_flops_per_device(device_kind: str, dtype: str = "bfloat16") -> float | None:
    kind = device_kind.lower()
    for key, peaks in PEAK_FLOPS:
        if key in kind:
            return peaks.get(dtype, peaks["bfloat16"])
    return None


def device_peak(dtype: str = "bfloat16") -> float | None:
    """Peak FLOP/s of this process's device kind (CPU devices share the machine's cores:
    the table's CPU row is for the whole host, so it is divided by the local device count)."""
    import jax
    dev = jax.devices()[0]
    peak = peak_flops_per_device(dev.platform if dev.platform == "cpu" else dev.device_kind, dtype)
    if peak is not None and dev.platform == "cpu":
        peak /= jax.local_device_count()
    return peak


def mfu(flops_per_step: float | None, step_time_s: float, dtype: str = "bfloat16") -> float | None:
    import jax
    peak = device_peak(dtype)
    if not flops_per_step or not peak or step_time_s <= 0:
        return None
    return flops_per_step / step_time_s / (peak * jax.device_count())


def model_flops_per_step(model_cfg, batch_size: int, feature_lengths: Mapping[str, int]) -> float | None:
    """Training FLOPs (forward + backward = 3 x forward) of one step, from t5x_lite.models.flops."""
    try:
        from t5x_lite.models.flops import flops_per_step
    except ImportError:
        return None
    fl = dict(feature_lengths)
    return float(flops_per_step(model_cfg, batch_size, int(fl.get("inputs", 0)), int(fl.get("targets", 0))))


def _clean(v: Any):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/Inf
    return v


class MetricsWriter:
    """Appends one JSON object per logged step to DIR/metrics.jsonl and mirrors scalars
    to TensorBoard event files in DIR.  Only process 0 writes."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        self._f = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            self._f = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
            try:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(logdir=workdir, flush_secs=10)
            except Exception:  # TensorBoard is a nicety; metrics.jsonl is the record
                self._tb = None

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step)}
        row.update({k: _clean(v) for k, v in metrics.items() if v is not None})
        self._f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k if "/" in k else f"train/{k}", v, int(step))

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
