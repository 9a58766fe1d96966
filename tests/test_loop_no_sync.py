"""The training loop never waits for the device on an ordinary step.

TrainLogger keeps each step's metrics on the device until a log step; the loop then dispatches the
next step without looking at the previous one's results, so the host runs ahead of the device.  A
`float(loss)` (or np.asarray, jax.device_get, block_until_ready, ...) on every step would make each
step wait for the one before: correct output, silently slower training.

JAX's transfer guard cannot see this on CPU (device -> host there is a no-op copy the guard does not
check), so the test instruments the run instead:
  * the jitted train step is wrapped (t5x_lite.train.step.make_train_step, which loop.train looks up
    at call time) so the host's position is known: after step s returns and until step s+1 returns,
    the host is "in step s";
  * every metric the step returns is handed to the loop inside a _Watched proxy that records any
    host read (__array__, __float__, item, block_until_ready, copy_to_host_async, ...), which also
    catches np.asarray on CPU, where a jax.Array is read through the buffer protocol;
  * jax.device_get / jax.block_until_ready and jax.Array's host-read methods are wrapped too, so a
    read of the train state (not only the metrics) is seen.
A read while the host is in a non-log step fails the test.  The last two tests add a per-step
float(loss) / np.asarray(loss) to TrainLogger.append and check that it is caught.  (A loop that
computed on the metrics on the device, e.g. summed them with jnp, would read the proxies through
__array__ and need this test adapted: JAX no longer accepts __jax_array__ objects.)
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

import jax
from jax._src import array as jax_array

from t5x_lite.train import default_config, loop
from t5x_lite.train import metrics as metrics_lib
from t5x_lite.train import step as step_lib

NUM_STEPS, LOG_EVERY = 8, 4
ARRAY_READS = ("__float__", "__int__", "__bool__", "__index__", "__format__", "item", "tolist",
               "block_until_ready", "copy_to_host_async")


@pytest.fixture(scope="module", autouse=True)
def compile_cache():
    """The three runs compile the same two programs: JAX's persistent cache (the directory the
    subprocess training tests share, tests/train_helpers.py) makes the second and third a read."""
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    saved = {k: getattr(jax.config, k) for k in keys}
    if not saved["jax_compilation_cache_dir"]:
        jax.config.update(keys[0], os.path.join(tempfile.gettempdir(), f"t5x_lite_test_jax_cache_{os.getuid()}"))
        jax.config.update(keys[1], 0)
        jax.config.update(keys[2], 0)
    yield
    for k, v in saved.items():
        jax.config.update(k, v)


def tiny_config():
    c = default_config.get_config()
    c.model.update(dict(d_model=32, num_heads=2, d_kv=16, d_ff=64, num_encoder_layers=1, num_decoder_layers=1))
    c.data.feature_lengths.inputs, c.data.feature_lengths.targets = 32, 8
    c.data.batch_size = 8   # divisible by the 8 emulated CPU devices (conftest.py)
    c.train.update(dict(num_steps=NUM_STEPS, log_every=LOG_EVERY, checkpoint_every=0, eval_every=0))
    return c


def is_log_step(step: int) -> bool:
    """loop.train's log condition with checkpoint_every=0 (save at the end only) and eval_every=0."""
    return step % LOG_EVERY == 0 or step == NUM_STEPS


class Recorder:
    def __init__(self):
        self.host_step = 0          # the step the host is in (0: before the first step)
        self.steps_seen = []        # non-log steps the host passed through
        self.violations = []        # (host step, what was read)
        self.log_step_reads = 0     # reads at log steps (the logger's fetch): proves the hooks fire

    def read(self, what: str) -> None:
        s = self.host_step
        if s == 0:
            return
        if is_log_step(s):
            self.log_step_reads += 1
        else:
            self.violations.append((s, what))


class _Watched:
    """A metric on its way from the step to the logger; records every host read of it."""

    def __init__(self, value, name, rec):
        self._v, self._name, self._rec = value, name, rec

    def _read(self, how):
        self._rec.read(f"{how} of metric {self._name!r}")
        return self._v

    def __array__(self, dtype=None, copy=None):
        v = np.asarray(self._read("__array__ (np.asarray / jax.device_get)"))
        return v if dtype is None else v.astype(dtype)

    def __float__(self):
        return float(self._read("float()"))

    def __int__(self):
        return int(self._read("int()"))

    def __bool__(self):
        return bool(self._read("bool()"))

    def __format__(self, spec):
        return format(self._read("format()"), spec)

    def item(self):
        return self._read(".item()").item()

    def tolist(self):
        return self._read(".tolist()").tolist()

    def block_until_ready(self):
        self._read(".block_until_ready()").block_until_ready()
        return self

    def copy_to_host_async(self):
        self._read(".copy_to_host_async()").copy_to_host_async()

    def __getattr__(self, name):   # shape, dtype, ... without a read
        return getattr(self._v, name)


@pytest.fixture
def instrumented(monkeypatch):
    rec = Recorder()
    real_make = step_lib.make_train_step

    def make_train_step(*args, **kwargs):
        real = real_make(*args, **kwargs)

        def train_step(state, batch):
            step = rec.host_step + 1
            state, metrics = real(state, batch)
            rec.host_step = step
            if not is_log_step(step):
                rec.steps_seen.append(step)
            return state, {k: _Watched(v, k, rec) for k, v in metrics.items()}
        return train_step

    monkeypatch.setattr(step_lib, "make_train_step", make_train_step)

    def wrap(fn, what):
        def wrapped(*args, **kwargs):
            rec.read(what)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(jax, "device_get", wrap(jax.device_get, "jax.device_get"))
    monkeypatch.setattr(jax, "block_until_ready", wrap(jax.block_until_ready, "jax.block_until_ready"))
    for name in ARRAY_READS:
        monkeypatch.setattr(jax_array.ArrayImpl, name, wrap(getattr(jax_array.ArrayImpl, name), f"jax.Array.{name}"))
    return rec


def run(tmp_path) -> int:
    return loop.train(tiny_config(), str(tmp_path / "workdir"), show_progress=False)


def test_no_host_read_on_non_log_steps(instrumented, tmp_path):
    assert run(tmp_path) == 0
    rec = instrumented
    assert rec.host_step == NUM_STEPS
    assert rec.steps_seen == [s for s in range(1, NUM_STEPS + 1) if not is_log_step(s)]   # 1-3, 5-7
    assert rec.log_step_reads > 0, "the hooks saw no read at all, not even the logger's fetch at log steps"
    assert not rec.violations, ("the host read device values on a non-log step, so the step waits for the "
                                f"device: {rec.violations[:4]}")


@pytest.mark.parametrize("read", [lambda x: float(x), np.asarray], ids=["float", "np.asarray"])
def test_a_per_step_read_is_caught(instrumented, tmp_path, monkeypatch, read):
    real_append = metrics_lib.TrainLogger.append

    def append(self, step, metrics):   # what a per-step progress-bar loss would do
        read(metrics["loss"])
        return real_append(self, step, metrics)

    monkeypatch.setattr(metrics_lib.TrainLogger, "append", append)
    assert run(tmp_path) == 0
    assert sorted({s for s, _ in instrumented.violations}) == instrumented.steps_seen
