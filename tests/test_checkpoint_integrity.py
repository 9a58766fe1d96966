"""Checkpoint integrity: fingerprints saved with every step, verified on every restore.

The fingerprint is checked against an independent numpy implementation of the same formula
(two wrapping uint32 sums of bit patterns, weighted by an odd function of the row-major
position), for several dtypes and for arrays sharded over 8 devices.  Then real damage, done to
the files as a disk or a copy would do it: 4 KiB zeroed inside a params file (size unchanged),
a truncated file, a deleted file, an edited config.  The trainer sets the damaged step aside
and resumes bit-exactly from the one before; score refuses with one line and writes nothing.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from t5x_lite import checkpoints, cli
from t5x_lite.errors import UserError

from train_helpers import TINY_MODEL

TINY = [*TINY_MODEL, "--config.data.batch_size=8", "--config.train.eval_every=0", "--config.train.log_every=1",
        "--config.train.checkpoint_every=2", "--config.train.keep_checkpoints=10"]


# ---------------------------------------------------------------- the fingerprint itself

def _numpy_fingerprint(a: np.ndarray) -> str:
    """The same formula as checkpoints._leaf_fingerprint, written independently in numpy."""
    width = {1: np.uint8, 2: np.uint16, 4: np.uint32}[a.dtype.itemsize]
    bits = a.reshape(-1).view(width).astype(np.uint64)
    i = np.arange(bits.size, dtype=np.uint64)
    m = np.uint64(2**32 - 1)
    w1 = ((i * 0x9E3779B1 + 0x7F4A7C15) & m) | 1
    w2 = ((((i ^ (i >> 7)) * 0x85EBCA77) + 0xC2B2AE3D) & m) | 1
    mixed = ((bits * 0x27D4EB2F) & m) ^ (bits >> 13)
    h1 = int(np.sum((bits * w1) & m, dtype=np.uint64) & m)
    h2 = int(np.sum((mixed * w2) & m, dtype=np.uint64) & m)
    return f"{h1:08x}{h2:08x}"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32", "uint8"])
def test_fingerprint_matches_numpy_and_ignores_sharding(dtype):
    rng = np.random.default_rng(0)
    host = np.asarray(jnp.asarray(rng.normal(size=(16, 24)) * 100).astype(dtype))
    mesh = jax.make_mesh((4, 2), ("a", "b"))
    sharded = jax.device_put(host, NamedSharding(mesh, P("a", "b")))
    other = jax.device_put(host, NamedSharding(mesh, P("b", None)))
    got = checkpoints.array_fingerprints({"x": host, "y": sharded, "z": other})
    want = _numpy_fingerprint(host)
    assert got["x"][0] == got["y"][0] == got["z"][0] == want
    assert got["x"][1] == str(np.dtype(host.dtype))


def test_any_single_changed_element_changes_the_fingerprint():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(33, 7)).astype(np.float32)
    ref = checkpoints.array_fingerprints({"a": base})["a"][0]
    for _ in range(50):
        bad = base.copy().reshape(-1)
        k = rng.integers(bad.size)
        bad.view(np.uint32)[k] ^= np.uint32(1 << int(rng.integers(32)))     # one flipped bit
        assert checkpoints.array_fingerprints({"a": bad.reshape(base.shape)})["a"][0] != ref
    swapped = base.copy()
    swapped[[0, 1]] = swapped[[1, 0]]                                        # same values, moved
    assert checkpoints.array_fingerprints({"a": swapped})["a"][0] != ref
    assert checkpoints.array_fingerprints({"a": np.zeros((4, 4), np.float32)})["a"][0] != \
        checkpoints.array_fingerprints({"a": np.zeros((16,), np.float32) + 1})["a"][0]


def test_non_finite_params_are_refused_even_with_good_checksums(tmp_path):
    params = {"w": np.array([1.0, np.nan], np.float32), "b": np.ones(3, np.float32)}
    checkpoints.save_params_checkpoint(str(tmp_path), params, {"model": None})
    with pytest.raises(checkpoints.DamagedCheckpoint, match=r"/0 is damaged: params/w holds NaN or Inf"):
        checkpoints.restore_params(str(tmp_path))


def test_params_that_read_cleanly_but_differ_from_what_was_saved_are_refused(tmp_path):
    """Silent damage: well-formed files holding other numbers (here another save's params/,
    swapped in) decode without error; only the fingerprint sees it."""
    params = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.float32)}
    checkpoints.save_params_checkpoint(str(tmp_path / "a"), params, {"model": None})
    other = {"w": params["w"].copy(), "b": params["b"].copy()}
    other["w"][2, 1] += 1e-3
    checkpoints.save_params_checkpoint(str(tmp_path / "b"), other, {"model": None})
    shutil.rmtree(tmp_path / "a" / "0" / "params")
    shutil.copytree(tmp_path / "b" / "0" / "params", tmp_path / "a" / "0" / "params")
    with pytest.raises(checkpoints.DamagedCheckpoint,
                       match=r"a/0 is damaged: params/w does not match the checksum saved with it"):
        checkpoints.restore_params(str(tmp_path / "a"))
    np.testing.assert_array_equal(checkpoints.restore_params(str(tmp_path / "b"))["w"], other["w"])


def test_a_step_written_before_checksums_still_loads(tmp_path):
    params = {"w": np.arange(6, dtype=np.float32)}
    checkpoints.save_params_checkpoint(str(tmp_path), params, {"model": None})
    shutil.rmtree(tmp_path / "0" / checkpoints.CHECKSUMS)
    np.testing.assert_array_equal(checkpoints.restore_params(str(tmp_path))["w"], params["w"])


# ---------------------------------------------------------------- damage done to real files

def _train(workdir, steps, capfd, *extra):
    code = cli.main(["train", "--workdir", str(workdir), *TINY, f"--config.train.num_steps={steps}", *extra])
    return code, capfd.readouterr().err


def _biggest_file(step_dir, item="params"):
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, item)) for f in fs]
    return max(files, key=os.path.getsize)


def _zero_4k(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(b"\0" * 4096)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _tree_bytes(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(root) for f in fs}


@pytest.fixture(scope="module")
def run4(tmp_path_factory):
    """A tiny run trained to step 4 (checkpoints 2 and 4) and one trained straight to 6."""
    base = tmp_path_factory.mktemp("integrity")
    for name, steps in (("run4", 4), ("run6", 6)):
        assert cli.main(["train", "--workdir", str(base / name), *TINY, f"--config.train.num_steps={steps}"]) == 0
    return base


def _losses(workdir):
    out = {}
    for line in open(os.path.join(workdir, "metrics.jsonl")):
        row = json.loads(line)
        if row.get("loss") is not None:
            out[row["step"]] = row["loss"]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["zero_4k", "truncate", "delete", "edit_config"])
def test_train_sets_a_damaged_latest_step_aside_and_resumes_exactly(run4, tmp_path, capfd, damage):
    wd = tmp_path / "wd"
    shutil.copytree(run4 / "run4", wd)
    step4 = wd / "checkpoints" / "4"
    if damage == "edit_config":
        meta = step4 / "config" / "metadata"
        meta.write_text(meta.read_text().replace('"seed": 0', '"seed": 1'))
    else:
        victim = _biggest_file(str(step4))
        {"zero_4k": _zero_4k, "truncate": _truncate, "delete": os.remove}[damage](victim)
    damaged = _tree_bytes(str(step4))

    code, err = _train(wd, 6, capfd)
    assert code == 0, err[-2000:]
    warnings = [line for line in err.splitlines() if "is damaged" in line]
    assert len(warnings) == 1 and f"{step4} is damaged" in warnings[0], err[-2000:]
    assert "set aside as 4.corrupt" in warnings[0] and "resumed from" in err and "step 2" in err
    assert _tree_bytes(str(wd / "checkpoints" / "4.corrupt")) == damaged      # set aside, not deleted
    assert not any(s in err for s in ("Traceback", "Exception ignored", "TensorStore({"))
    # replayed from step 2: the same losses and params as the run that never stopped
    assert _losses(wd) == {s: l for s, l in _losses(run4 / "run6").items()}
    got = checkpoints.restore_params(str(wd / "checkpoints"), 6)
    want = checkpoints.restore_params(str(run4 / "run6" / "checkpoints"), 6)
    jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.mark.slow
def test_score_refuses_a_damaged_checkpoint_with_one_line(run4, tmp_path, capfd):
    wd = tmp_path / "wd"
    shutil.copytree(run4 / "run4", wd)
    _zero_4k(_biggest_file(str(wd / "checkpoints" / "4")))
    src = tmp_path / "in.jsonl"
    src.write_text('{"inputs": "a b c", "targets": "d"}\n')
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    before = _tree_bytes(str(wd))
    code = cli.main(["score", "--checkpoint", str(wd), "--input", str(src), "--out", str(out), "--no-progress"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("t5x-lite score: error: checkpoint ") and "/4 is damaged: params/" in err[0]
    # zstd framing decides which: a zeroed compressed block fails to decode, a zeroed raw block
    # decodes to other numbers that only the fingerprint catches
    assert "does not match the checksum saved with it" in err[0] or "params/ cannot be read" in err[0]
    assert out.read_text() == "previous results\n" and _tree_bytes(str(wd)) == before   # nothing touched


@pytest.mark.slow
def test_every_step_damaged_is_one_line_and_nothing_is_deleted(run4, tmp_path, capfd):
    wd = tmp_path / "wd"
    shutil.copytree(run4 / "run4", wd)
    for step in ("2", "4"):
        _truncate(_biggest_file(str(wd / "checkpoints" / step)))
    code, err = _train(wd, 6, capfd)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("t5x-lite train: error: every checkpoint in ")
    assert sorted(os.listdir(wd / "checkpoints")) == ["2.corrupt", "4.corrupt"]


@pytest.mark.slow
def test_a_different_model_is_refused_and_its_checkpoints_are_kept(run4, tmp_path, capfd):
    wd = tmp_path / "wd"
    shutil.copytree(run4 / "run4", wd)
    before = _tree_bytes(str(wd / "checkpoints"))
    code, err = _train(wd, 6, capfd, "--config.model.d_ff=96")
    lines = err.strip().splitlines()
    assert code == 2 and "holds checkpoints of a different model (step 4)" in lines[-1]
    assert not any("damaged" in line for line in lines)
    assert _tree_bytes(str(wd / "checkpoints")) == before


def test_restore_failure_message_is_short(tmp_path):
    params = {"w": np.arange(4096, dtype=np.float32)}
    checkpoints.save_params_checkpoint(str(tmp_path), params, {"model": None})
    _truncate(_biggest_file(str(tmp_path / "0")))
    with pytest.raises(UserError) as e:
        checkpoints.restore_params(str(tmp_path))
    assert "is damaged: params/ cannot be read" in str(e.value) and len(str(e.value)) < 400
