"""Multi-host faults, with two processes on localhost (jax.distributed over gloo, 2 CPU devices each),
as tests/test_train_multihost.py launches them: a dead peer, preemption (SIGTERM to both processes or to
one) with exact resume, and a failed save (single process: an injected write error and a full tmpfs).
The stderr guard that turns JAX's fatal abort into one line is tested on its own first (fast tier)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from t5x_lite import checkpoints, partitioning

from train_helpers import REPO, TINY_MODEL, jax_cache_env

slow = pytest.mark.slow  # end-to-end / multi-process: the whole-suite tier
TINY = [*TINY_MODEL, "--config.data.batch_size=8", "--config.train.eval_every=0", "--config.train.log_every=1",
        "--config.mesh.data=2", "--config.mesh.fsdp=2"]
PEER_LOST = re.compile(r"^t5x-lite train: error: lost contact with another process of this run \(.+\); rerun the "
                       r"same command on every process to resume from the last checkpoint$")


# ----------------------------------------------------------------------------
# The stderr guard (partitioning._stderr_guard), fed by hand
# ----------------------------------------------------------------------------

JAX_FATAL = (  # what a survivor's stderr gets from JAX when its peer (process 1) stopped heartbeating
    b"E1206 18:55:56.660096   28726 coordination_service.cc:1549] Use error polling to propagate the following "
    b"error to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):\n1\n"
    b"The tasks have crashed. Check the task logs for an earlier error.\n"
    b"E1206 18:55:56.660775   28737 coordination_service_agent.cc:289] Polled an error from coordination service\n"
    b"F1206 18:55:56.660850   28737 client.h:80] Terminating process because the JAX distributed service detected "
    b"fatal errors. This most likely indicates that another task died; absl::Status: UNAVAILABLE: The following "
    b"tasks are unhealthy (stopped sending heartbeats):\n1\nThe tasks have crashed.\n"
    b"ERROR:absl:[process=0] Failed to run 7 Handler Commit operations\nTraceback (most recent call last):\n"
    b"  File \"x.py\", line 1\nTimeoutError: barrier\n*** Check failure stack trace: ***\n    @ 0x7f78 absl::Flush()\n")


def _guard(data: bytes) -> bytes:
    out = subprocess.run([sys.executable, "-c", "from t5x_lite.partitioning import _stderr_guard; _stderr_guard()"],
                         input=data, capture_output=True, timeout=60, cwd=REPO)
    assert out.returncode == 0 and not out.stderr, out.stderr
    return out.stdout


def test_stderr_guard_turns_jax_fatal_abort_into_one_line():
    before = b"[t5x-lite train] model ...\n\rtrain:   2%| 6/400 [00:16<13:29]"
    out = _guard(before + JAX_FATAL)
    assert out.startswith(before + b"\n")  # what came before is kept; the line starts on a fresh line
    lines = out[len(before) + 1:].decode().splitlines()
    assert len(lines) == 1 and PEER_LOST.match(lines[0]), out
    assert "(process 1 stopped sending heartbeats)" in lines[0]


def test_stderr_guard_names_a_lost_coordinator():
    fatal = (b"W1206 18:58:33.227903 2722 preemption_sync_manager.cc:147] Failed to retrieve preemption notice: "
             b"UNAVAILABLE: Socket closed\nE1206 18:58:33.227995 2722 coordination_service_agent.cc:289] Polled an "
             b"error\nF1206 18:58:33.228 2722 client.h:80] Terminating process because the JAX distributed service "
             b"detected fatal errors. absl::Status: UNAVAILABLE: Socket closed\n")
    lines = _guard(fatal).decode().splitlines()
    assert len(lines) == 1 and "(process 0, the coordinator, is unreachable)" in lines[0]


def test_stderr_guard_passes_everything_else_unchanged():
    data = (b"[t5x-lite train] resumed\n\rtrain:   0%|\rtrain:  50%|\n"
            b"W1206 19:00:47.259968 6786 preemption_notifier.cc:90] SIGTERM caught at 2026-12-06T19:00:47\n"
            b"ERROR:absl:something else\nTraceback (most recent call last):\nValueError: x\n"
            b"E1206 19:00:48.0 1 foo.cc:1] an error that is not fatal\n[t5x-lite train] done\n")
    assert _guard(data) == data


def test_stderr_guard_lets_the_trainers_own_line_be_the_last_word():
    own = b"t5x-lite train: error: lost contact with another process of this run (Gloo AllGather failed); x\n"
    assert _guard(b"progress\r" + own + JAX_FATAL) == b"progress\r\n" + own


def test_peer_failure_recognises_a_collective_that_lost_its_peer_and_nothing_else(monkeypatch):
    import jax
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    gloo = jax.errors.JaxRuntimeError("UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/pair.cc"
                                      ":538] Read error [127.0.0.1]:42894: Connection reset by peer")
    why = "UNKNOWN: Gloo AllGather failed: Read error [127.0.0.1]:42894: Connection reset by peer"
    assert partitioning.peer_failure(gloo) == why
    wrapped = TimeoutError("Timed out while waiting for the async_write_complete barrier")
    wrapped.__cause__ = gloo
    assert partitioning.peer_failure(wrapped) == why
    assert partitioning.peer_failure(jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory")) is None
    assert partitioning.peer_failure(ConnectionError("Connection reset by peer")) is None  # not from JAX
    monkeypatch.setattr(jax, "process_count", lambda: 1)
    assert partitioning.peer_failure(gloo) is None  # one process has no peers


def test_heartbeat_timeout_must_be_positive():
    with pytest.raises(partitioning.UserError, match="--heartbeat_timeout_seconds must be >= 1, got 0"):
        partitioning.maybe_initialize_distributed("127.0.0.1:1", 2, 0, heartbeat_timeout_s=0)
    assert partitioning.DEFAULT_HEARTBEAT_TIMEOUT_S == 30


# ----------------------------------------------------------------------------
# Two processes
# ----------------------------------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir, num_steps, *extra, tag="run"):
    """Start both processes (stderr to files next to the workdir); returns (procs, stderr paths)."""
    port = _free_port()
    env = jax_cache_env(dict(os.environ, JAX_NUM_CPU_DEVICES="2"))
    errs = [f"{workdir}.{tag}.err{i}" for i in range(2)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "t5x_lite.cli", "train", "--workdir", str(workdir), *TINY, *extra,
         f"--config.train.num_steps={num_steps}", f"--coordinator_address=127.0.0.1:{port}",
         "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(errs[i], "w")) for i in range(2)]
    return procs, errs


def _wait(procs, timeout=300):
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _run(workdir, num_steps, *extra, tag="run"):
    procs, errs = _launch(workdir, num_steps, *extra, tag=tag)
    codes = _wait(procs)
    texts = [open(e).read() for e in errs]
    assert codes == [0, 0], texts[0][-3000:] + texts[1][-3000:]
    return texts


def _wait_until(procs, ready, what, timeout=300):
    deadline = time.time() + timeout
    while not ready():
        assert all(p.poll() is None for p in procs), f"a process ended before {what}"
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.1)


def _rows(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def _losses(workdir):
    return [(r["step"], r["loss"]) for r in _rows(workdir)]


def _steps(ckdir):
    return sorted(int(d) for d in os.listdir(ckdir) if d.isdigit())


def _messages(text):
    """stderr without progress-bar redraws and [t5x-lite train] info lines."""
    return [s.strip() for s in re.split(r"[\r\n]", text)
            if s.strip() and not s.startswith("train:") and not s.startswith("[t5x-lite train]")]


@slow
@pytest.mark.parametrize("victim", [1, 0], ids=["kill-process-1", "kill-coordinator"])
def test_dead_peer_ends_the_other_process_with_one_line_within_60s(tmp_path, victim):
    wd = tmp_path / "wd"
    procs, errs = _launch(wd, 400, "--config.train.checkpoint_every=2")  # saves in flight all the time
    _wait_until(procs, lambda: os.path.isdir(wd / "checkpoints" / "2") and len(_rows(wd)) >= 3, "step 3")
    procs[victim].kill()  # SIGKILL
    killed = time.time()
    survivor = procs[1 - victim]
    try:
        code = survivor.wait(timeout=90)
    finally:
        _wait(procs, timeout=1)
    took = time.time() - killed
    err = open(errs[1 - victim]).read()
    assert code == partitioning.PEER_LOST_EXIT_CODE, err[-3000:]
    assert took < 60, f"the survivor needed {took:.0f} s"
    assert len(_messages(err)) == 1 and PEER_LOST.match(_messages(err)[0]), err[-3000:]
    print(f"survivor {1 - victim} exited after {took:.1f} s: {_messages(err)[0]}")

    if victim == 1:  # rerunning resumes from the last complete checkpoint
        last = checkpoints.latest_step(str(wd / "checkpoints"))
        texts = _run(wd, last + 2, "--config.train.checkpoint_every=2", tag="rerun")
        assert f"resumed from {wd / 'checkpoints'} step {last}" in texts[0], texts[0][-2000:]
        assert _steps(wd / "checkpoints")[-1] == last + 2


N = 10  # steps of the preemption runs (SIGTERM comes after step 2)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(per-step losses, final params) of one uninterrupted 2-process run of N steps."""
    wd = tmp_path_factory.mktemp("reference") / "wd"
    _run(wd, N, "--config.train.checkpoint_every=0")
    return _losses(wd), checkpoints.restore_params(str(wd / "checkpoints"))


def _preempt(wd, targets, *extra):
    """Start a run of N steps, SIGTERM `targets` after step 2; returns the stderr of process 0 and
    the step it stopped at, checking both processes exit 0 after a save at that step."""
    procs, errs = _launch(wd, N, *extra, tag="preempted")
    ck = wd / "checkpoints"
    _wait_until(procs, lambda: len(_rows(wd)) >= 2 or (os.path.isdir(ck) and _steps(ck)[-1:] >= [2]), "step 2")
    for i in targets:
        procs[i].send_signal(signal.SIGTERM)
    codes = _wait(procs)
    texts = [open(e).read() for e in errs]
    assert codes == [0, 0], texts[0][-3000:] + texts[1][-3000:]
    stop = _steps(wd / "checkpoints")[-1]
    assert 2 <= stop < N, stop  # stopped before the end
    assert f"SIGTERM: saved checkpoint at step {stop}; exiting" in texts[0], texts[0][-3000:]
    data = checkpoints.ocp.CheckpointManager(str(wd / "checkpoints")).restore(
        stop, args=checkpoints.ocp.args.Composite(data_iter=checkpoints.ocp.args.JsonRestore()))["data_iter"]
    assert data["process_count"] == 2 and len(data["states"]) == 2  # both processes' iterators, same step
    return texts[0], stop


def _assert_same_params(a, b):
    import jax
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


@slow
def test_sigterm_to_both_saves_once_and_the_rerun_resumes_exactly(tmp_path, uninterrupted):
    wd = tmp_path / "wd"
    _, stop = _preempt(wd, [0, 1], "--config.train.checkpoint_every=0")
    assert _steps(wd / "checkpoints") == [stop]  # one save
    assert [r["step"] for r in _rows(wd)] == list(range(1, stop + 1))
    texts = _run(wd, N, "--config.train.checkpoint_every=0", tag="resumed")  # the same command again
    assert f"resumed from {wd / 'checkpoints'} step {stop}" in texts[0]
    ref_losses, ref_params = uninterrupted
    assert _losses(wd) == ref_losses  # every step, bit for bit
    _assert_same_params(checkpoints.restore_params(str(wd / "checkpoints")), ref_params)


@slow
def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
    """Only process 1 gets the signal; process 0 logs and saves the same step.  log_every > N: the
    processes agree on the stop step at once, not at the next log step (a real grace period is ~30 s)."""
    wd = tmp_path / "wd"
    _preempt(wd, [1], "--config.train.log_every=100", "--config.train.checkpoint_every=1")


# ----------------------------------------------------------------------------
# A failed save (one process)
# ----------------------------------------------------------------------------

FAIL_SAVE = """
import resource, signal, sys
from t5x_lite import checkpoints
from t5x_lite.cli import main
_save = checkpoints.TrainCheckpointer.save
def save(self, step, *args, **kwargs):
    if int(step) == 4:  # once step 2 is written, no file may grow past 64 KiB: this save fails part-way
        self.wait()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY))
    return _save(self, step, *args, **kwargs)
checkpoints.TrainCheckpointer.save = save
sys.exit(main(sys.argv[1:]))
"""


def _train_one(wd, *prefix):
    cmd = [*prefix, "train", "--workdir", str(wd), *TINY_MODEL, "--config.data.batch_size=8",
           "--config.train.eval_every=0", "--config.train.log_every=1", "--config.train.checkpoint_every=2",
           "--config.train.num_steps=6"]
    return subprocess.run(cmd, cwd=REPO, env=jax_cache_env(dict(os.environ)), capture_output=True, text=True,
                          timeout=300)


def _mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or r.returncode})")


@slow
@pytest.mark.parametrize("how", ["write-error", "disk-full"])
def test_failed_save_keeps_the_previous_checkpoint_and_says_so_in_one_line(tmp_path, how):
    wd = tmp_path / "wd"
    ckdir = wd / "checkpoints"
    if how == "write-error":  # EFBIG from RLIMIT_FSIZE: needs no privileges
        out = _train_one(wd, sys.executable, "-c", FAIL_SAVE)
    else:  # ENOSPC: a 5 MiB tmpfs holds one checkpoint of the tiny model (3.5 MB), not two
        _mount_tmpfs(ckdir, "5m")
    try:
        if how == "disk-full":
            out = _train_one(wd, sys.executable, "-m", "t5x_lite.cli")
        msgs = _messages(out.stderr)
        assert out.returncode == 2 and len(msgs) == 1, out.stderr[-3000:]
        assert re.match(r"t5x-lite train: error: saving checkpoint step 4 to .* failed \((disk full|write error): "
                        r".*\); the last complete checkpoint, step 2, is intact: fix the cause and rerun the same "
                        r"command to resume from it$", msgs[0]), msgs[0]
        assert _steps(ckdir) == [2]
        checkpoints.restore_params(str(ckdir), 2)  # verifies against the checksums saved with it
        if how == "disk-full":
            subprocess.run(["mount", "-o", "remount,size=64m", str(ckdir)], check=True)
            again = _train_one(wd, sys.executable, "-m", "t5x_lite.cli")
            assert again.returncode == 0, again.stderr[-3000:]
            assert f"resumed from {ckdir} step 2" in again.stderr and _steps(ckdir)[-1] == 6
    finally:
        if how == "disk-full":
            subprocess.run(["umount", str(ckdir)], capture_output=True)


# ----------------------------------------------------------------------------
# A change of process count
# ----------------------------------------------------------------------------

def _data_item(ckdir, step):
    return checkpoints.ocp.CheckpointManager(str(ckdir)).restore(
        step, args=checkpoints.ocp.args.Composite(data_iter=checkpoints.ocp.args.JsonRestore()))["data_iter"]


def _reshard_warning(step, saved, now):
    return (f"[t5x-lite train] warning: step {step} holds the data iterator states of {saved} process(es) and this "
            f"run has {now}, so the data pipeline starts again at the first document of its {now}-process order: "
            f"documents already trained on (steps 1-{step}) are read again in this epoch, none is skipped")


@slow
def test_a_change_of_process_count_resumes_and_says_what_happens_to_the_data(tmp_path):
    """2 processes -> 1 (with the same 4 devices) -> 2.  Each process reads a shuffle of its own share of
    the documents, so a data state cannot be resharded: the warning says what happens instead."""
    wd = tmp_path / "wd"
    ckdir = wd / "checkpoints"
    _run(wd, 2, "--config.train.checkpoint_every=2")
    one = subprocess.run([sys.executable, "-m", "t5x_lite.cli", "train", "--workdir", str(wd), *TINY,
                          "--config.train.checkpoint_every=2", "--config.train.num_steps=4"], cwd=REPO,
                         env=jax_cache_env(dict(os.environ, JAX_NUM_CPU_DEVICES="4")), capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    lines = [s for s in re.split(r"[\r\n]", one.stderr) if "warning" in s]
    assert lines == [_reshard_warning(2, 2, 1)], lines
    assert f"resumed from {ckdir} step 2" in one.stderr
    assert _data_item(ckdir, 4)["process_count"] == 1  # from here on, 1-process resumes are exact again

    texts = _run(wd, 6, "--config.train.checkpoint_every=2", tag="back-to-2")
    assert _reshard_warning(4, 1, 2) in texts[0] and f"resumed from {ckdir} step 4" in texts[0], texts[0][-3000:]
    assert _data_item(ckdir, 6)["process_count"] == 2
    assert [r["step"] for r in _rows(wd)] == [1, 2, 3, 4, 5, 6]
