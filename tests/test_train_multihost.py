"""Two processes on localhost (jax.distributed, 2 CPU devices each -> a 4-device mesh) train,
checkpoint into one shared workdir, and resume."""

import pytest
import json
import os
import socket
import subprocess
import sys

from t5x_lite import checkpoints

from train_helpers import REPO, TINY_MODEL, jax_cache_env

pytestmark = pytest.mark.slow  # end-to-end / multi-device: the whole-suite tier
TINY = [*TINY_MODEL,
        "--config.data.batch_size=8", "--config.train.eval_every=0", "--config.train.log_every=1",
        "--config.train.checkpoint_every=2", "--config.mesh.data=2", "--config.mesh.fsdp=2"]




def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir, num_steps):
    port = _free_port()
    env = jax_cache_env(dict(os.environ, JAX_NUM_CPU_DEVICES="2"))
    procs = [subprocess.Popen(
        [sys.executable, "-m", "t5x_lite.cli", "train", "--workdir", str(workdir), *TINY,
         f"--config.train.num_steps={num_steps}", f"--coordinator_address=127.0.0.1:{port}",
         "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, err))
    return outs


def test_two_processes_train_checkpoint_and_resume(tmp_path):
    wd = tmp_path / "wd"
    first = _launch(wd, 4)
    for rc, err in first:
        assert rc == 0, err[-3000:]
    assert "2 process(es)" in first[0][1] and "mesh {'data': 2, 'fsdp': 2, 'tensor': 1}" in first[0][1]
    ckdir = str(wd / "checkpoints")
    assert checkpoints.latest_step(ckdir) == 4
    data_item = checkpoints.ocp.CheckpointManager(ckdir).restore(
        4, args=checkpoints.ocp.args.Composite(data_iter=checkpoints.ocp.args.JsonRestore()))["data_iter"]
    assert data_item["process_count"] == 2 and len(data_item["states"]) == 2
    assert data_item["states"][0] != data_item["states"][1]  # each host reads its own shard

    second = _launch(wd, 6)
    for rc, err in second:
        assert rc == 0, err[-3000:]
    assert "resumed from" in second[0][1] and "step 4" in second[0][1]
    assert checkpoints.latest_step(ckdir) == 6
    rows = [json.loads(line) for line in open(wd / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # only process 0 writes
    assert all(0 < r["loss"] < 20 for r in rows)
