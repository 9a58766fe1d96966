"""Data at pod scale, without starting a pod: with 16 and 64 processes, the per-process document
shards (data/streams.py process_shard, what every process's grain pipeline reads) cover every
document exactly once, and the global batch assembles the processes' local batches in process
order (partitioning.batch_sharding over make_mesh's 64-device mesh, as global_batch uses it)."""

import os
import subprocess
import sys

import grain
import pytest

from t5x_lite.data.streams import process_shard

from train_helpers import REPO


@pytest.mark.parametrize("num_processes", [16, 64])
@pytest.mark.parametrize("num_documents", [64 * 8, 64 * 8 + 37])
def test_process_shards_cover_every_document_exactly_once(num_processes, num_documents):
    docs = grain.MapDataset.source(list(range(num_documents)))
    seen = []
    sizes = []
    for p in range(num_processes):
        shard = process_shard(docs, p, num_processes).shuffle(seed=1234)   # as ExampleStream reads it
        ids = [shard[i] for i in range(len(shard))]
        assert len(ids) == len(set(ids))
        assert all(i % num_processes == p for i in ids)   # nothing of another process
        seen += ids
        sizes.append(len(ids))
    assert sorted(seen) == list(range(num_documents))          # every document once, no overlap
    assert max(sizes) - min(sizes) <= 1                         # balanced to one document


_ORDER_SCRIPT = """
import jax
from t5x_lite import partitioning
assert jax.device_count() == 64
B = 128
for P in (16, 64):
    per_process = 64 // P
    for mesh_cfg in ({"data": 64, "fsdp": 1, "tensor": 1}, {"data": 4, "fsdp": 16, "tensor": 1},
                     {"data": 1, "fsdp": 64, "tensor": 1}, {"data": 2, "fsdp": 8, "tensor": 4}):
        if mesh_cfg["tensor"] > per_process:
            continue   # a tensor axis across processes: each would have to read the same rows (see docs/scaling.md)
        mesh = partitioning.make_mesh(mesh_cfg)
        rows = partitioning.batch_sharding(mesh).devices_indices_map((B, 8))
        for p in range(P):
            mine = set()
            for d, index in rows.items():
                if d.id // per_process == p:      # jax.devices() lists each process's devices together
                    mine.update(range(*index[0].indices(B)))
            local = B // P
            assert mine == set(range(p * local, (p + 1) * local)), (P, mesh_cfg, p, sorted(mine)[:4])
print("ORDER_OK")
"""


def test_global_batch_assembles_local_batches_in_process_order():
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="64", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _ORDER_SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "ORDER_OK" in proc.stdout, proc.stderr[-3000:]
