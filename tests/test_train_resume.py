"""Exact resume: a run SIGKILLed at an arbitrary step, then SIGKILLed again in the middle
of an (async) checkpoint save, then restarted with the same command, reproduces an
uninterrupted run bit for bit: per-step losses and final params."""

import pytest
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from t5x_lite import checkpoints

from train_helpers import REPO, TINY_MODEL, jax_cache_env

pytestmark = pytest.mark.slow  # end-to-end / multi-device: the whole-suite tier
TINY = [*TINY_MODEL,
        "--config.model.dropout_rate=0.1",  # dropout on: its keys must replay too
        "--config.data.batch_size=4", "--config.train.eval_every=0", "--config.train.log_every=1",
        "--config.train.num_steps=40", "--config.train.checkpoint_every=4", "--config.train.keep_checkpoints=10"]




def _cmd(workdir, kill_during_save_of=None):
    if kill_during_save_of is None:
        return [sys.executable, "-m", "t5x_lite.cli", "train", "--workdir", str(workdir), *TINY]
    script = os.path.join(REPO, "tests", "kill_during_save.py")
    return [sys.executable, script, str(kill_during_save_of), "train", "--workdir", str(workdir), *TINY]


def _env(**extra):
    env = jax_cache_env(dict(os.environ))
    env["JAX_NUM_CPU_DEVICES"] = "1"  # one device: the fastest compile (sharding is tested elsewhere)
    env.update(extra)
    return env


def _losses(workdir):
    """step -> loss, the last logged value of each step (a resumed run re-logs replayed steps)."""
    out = {}
    for line in open(os.path.join(workdir, "metrics.jsonl")):
        row = json.loads(line)
        if "loss" in row:
            out[row["step"]] = row["loss"]
    return out


def _logged_steps(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    steps = [json.loads(line)["step"] for line in open(path) if line.endswith("\n")]
    return max(steps, default=0)


def test_sigkill_anywhere_then_restart_is_bit_identical(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    done = subprocess.run(_cmd(ref), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    # 1) SIGKILL at an arbitrary step (once step 5 is logged; wherever the run has got to by then)
    proc = subprocess.Popen(_cmd(run), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while _logged_steps(run) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ckdir = str(run / "checkpoints")
    killed_at = _logged_steps(run)
    last = checkpoints.latest_step(ckdir) or 0
    assert 5 <= killed_at < 40 and last <= killed_at and last + 4 <= 40

    # 2) restart; SIGKILL it again while its first checkpoint (step last + 4) is being written
    proc = subprocess.run(_cmd(run, kill_during_save_of=last + 4), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    # the half-written step is an Orbax temporary directory that is never reported as a checkpoint
    assert glob.glob(os.path.join(ckdir, f"{last + 4}.orbax-checkpoint-tmp*")), os.listdir(ckdir)
    assert (checkpoints.latest_step(ckdir) or 0) == last

    # 3) the same command again finishes the run
    proc = subprocess.run(_cmd(run), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert last == 0 or f"resumed from {ckdir} step {last}" in proc.stderr
    assert not glob.glob(os.path.join(ckdir, "*tmp*"))

    want, got = _losses(ref), _losses(run)
    assert sorted(want) == list(range(1, 41)) and sorted(got) == sorted(want)
    assert [got[s] for s in sorted(got)] == [want[s] for s in sorted(want)]  # bit-identical floats
    assert want[40] < want[1]
    p_ref = checkpoints.restore_params(str(ref / "checkpoints"), 40)
    p_run = checkpoints.restore_params(ckdir, 40)
    import jax
    for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(p_run), strict=True):
        np.testing.assert_array_equal(a, b)
    # every kept step restores and carries the data-iterator state and the resolved config
    assert checkpoints.read_config(ckdir, 40)["model"]["d_model"] == 32
