"""Faults: SIGTERM (preemption) saves and exits 0; a NaN/Inf loss stops the run with one
clear line and a non-zero exit, leaving the last good checkpoint intact."""

import pytest
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from t5x_lite import checkpoints

from train_helpers import REPO, TINY_MODEL, jax_cache_env

pytestmark = pytest.mark.slow  # end-to-end / multi-device: the whole-suite tier
TINY = [*TINY_MODEL, "--config.model.dropout_rate=0.1",
        "--config.data.batch_size=4", "--config.train.eval_every=0", "--config.train.log_every=1"]




def _run(workdir, *extra, popen=False):
    cmd = [sys.executable, "-m", "t5x_lite.cli", "train", "--workdir", str(workdir), *TINY, *extra]
    env = jax_cache_env(dict(os.environ, JAX_NUM_CPU_DEVICES="1"))
    if popen:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _logged_steps(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    return max((json.loads(ln)["step"] for ln in open(path) if ln.endswith("\n")), default=0)


def test_sigterm_saves_a_checkpoint_and_exits_0(tmp_path):
    wd = tmp_path / "wd"
    proc = _run(wd, "--config.train.num_steps=100000", "--config.train.checkpoint_every=0", popen=True)
    deadline = time.time() + 300
    while _logged_steps(wd) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM: saved checkpoint at step" in err
    step = checkpoints.latest_step(str(wd / "checkpoints"))
    # checkpoint_every=0 saves only at the end, so this one is the preemption save
    assert step is not None and 3 <= step < 100000 and step == _logged_steps(wd)
    params = checkpoints.restore_params(str(wd / "checkpoints"), step)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    wd = tmp_path / "wd"
    ok = _run(wd, "--config.train.num_steps=2", "--config.train.checkpoint_every=2")
    assert ok.returncode == 0, ok.stderr[-3000:]
    before = checkpoints.restore_params(str(wd / "checkpoints"), 2)
    # resume with an absurd learning rate: the params overflow on the next update
    bad = _run(wd, "--config.train.num_steps=8", "--config.train.checkpoint_every=1",
               "--config.optimizer.learning_rate=1e30")
    assert bad.returncode == 1, bad.stderr[-3000:]
    errors = [ln for ln in bad.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "non-finite " in errors[0] and " at step 3 " in errors[0], bad.stderr[-3000:]
    assert "Traceback" not in bad.stderr
    # The diverged step's row is in metrics.jsonl, strict JSON: what diverged (null values, or "params")
    # is named under "nonfinite".
    rows = [json.loads(ln, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))
            for ln in open(wd / "metrics.jsonl")]
    last = rows[-1]
    assert last["step"] == 3 and last["nonfinite"] and all(last.get(k) is None for k in last["nonfinite"]), last
    # the error line names what diverged, as the row does
    said = "params (after the update)" if last["nonfinite"] == ["params"] else "loss/gradient"
    assert f"non-finite {said} at step 3" in errors[0], (errors[0], last)
    assert checkpoints.latest_step(str(wd / "checkpoints")) == 2
    after = checkpoints.restore_params(str(wd / "checkpoints"), 2)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)
