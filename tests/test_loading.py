"""t5x_lite.loading: one loader for a checkpoint dir or a training workdir, at the latest or a given
step; every way a checkpoint can be wrong is one UserError line, raised before anything compiles."""

import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from t5x_lite import loading, partitioning
from t5x_lite.checkpoints import save_params_checkpoint
from t5x_lite.errors import UserError
from t5x_lite.models import ModelConfig, build_model

CFG = ModelConfig(architecture="encoder_decoder", vocab_size=64, d_model=16, num_heads=2, d_kv=8, d_ff=32,
                  num_encoder_layers=1, num_decoder_layers=1).validate()


def _params(seed):
    return nnx.to_pure_dict(nnx.state(build_model(CFG, nnx.Rngs(seed)), nnx.Param))


def _embedding(tree):
    return np.asarray(tree["token_embedder"]["embedding"])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint dir with steps 0 and 5 (different params), and a workdir holding a copy."""
    root = tmp_path_factory.mktemp("loading")
    ckpt = str(root / "ckpt")
    params = {0: _params(1), 5: _params(2)}
    for step, p in params.items():
        save_params_checkpoint(ckpt, p, {"model": CFG.to_dict(), "vocabulary": "byte"}, step=step)
    workdir = root / "workdir"
    workdir.mkdir()
    shutil.copytree(ckpt, workdir / "checkpoints")
    return ckpt, str(workdir), params


def test_checkpoint_dir_workdir_and_step(saved):
    ckpt, workdir, params = saved
    for path in (ckpt, workdir):
        latest = loading.load_model(path)
        assert latest.step == 5 and latest.model_config == CFG
        np.testing.assert_array_equal(_embedding(nnx.state(latest.model, nnx.Param)), _embedding(params[5]))
        first = loading.load_model(path, 0)
        assert first.step == 0
        np.testing.assert_array_equal(_embedding(nnx.state(first.model, nnx.Param)), _embedding(params[0]))
    assert loading.load_model(workdir).directory == os.path.join(workdir, "checkpoints")
    assert loading.locate(ckpt, 0) == (ckpt, 0) and loading.locate(workdir) == (os.path.join(workdir, "checkpoints"), 5)


def test_params_live_on_the_loaded_mesh_and_vocabulary(saved):
    ckpt, _, _ = saved
    loaded = loading.load_model(ckpt)
    leaf = loaded.model.token_embedder.embedding.get_value()
    assert leaf.sharding.mesh.devices.size == 1 and set(loaded.mesh.devices.flat) == leaf.devices()
    assert loaded.vocabulary.vocab_size == 359                 # the checkpoint's "byte" vocabulary
    assert loading.load_model(ckpt, vocabulary="builtin").vocabulary.vocab_size > 359   # an override
    assert loading.load_model(ckpt, read_vocabulary=False).vocabulary is None


def test_load_params_onto_shardings(saved):
    ckpt, workdir, params = saved
    mesh = partitioning.make_mesh({"data": 1, "fsdp": 2, "tensor": 1}, jax.devices()[:2])
    state = nnx.state(nnx.eval_shape(lambda: build_model(CFG, nnx.Rngs(0))), nnx.Param)
    shardings = partitioning.named(mesh, partitioning.param_specs(state, mesh))
    target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          nnx.to_pure_dict(state), shardings)
    got = loading.load_params(workdir, target, step=0)
    emb = got["token_embedder"]["embedding"]
    assert emb.sharding == target["token_embedder"]["embedding"].sharding
    assert len(emb.addressable_shards) == 2 and emb.addressable_shards[0].data.shape == (64, 8)  # embed on fsdp
    np.testing.assert_array_equal(np.asarray(emb), _embedding(params[0]))
    wrong = dict(target, token_embedder={"embedding": jax.ShapeDtypeStruct((64, 32), np.float32)})
    with pytest.raises(UserError, match=r"holds a different model: param token_embedder/embedding has shape "
                                        r"\[64, 16\], expected \[64, 32\]"):
        loading.load_params(ckpt, wrong)


def _bad(tmp_path, name, params=None, config=None):
    path = str(tmp_path / name)
    save_params_checkpoint(path, params if params is not None else _params(1),
                           config if config is not None else {"model": CFG.to_dict()})
    return path


def _one_line_error(path, step=None):
    with pytest.raises(UserError) as e:
        loading.load_model(path, step)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_each_error_is_one_line(saved, tmp_path):
    ckpt, workdir, _ = saved
    assert _one_line_error(str(tmp_path / "nope")).startswith("checkpoint directory not found")
    (tmp_path / "empty").mkdir()
    assert "no complete checkpoint in" in _one_line_error(str(tmp_path / "empty"))
    (tmp_path / "fresh_workdir" / "checkpoints").mkdir(parents=True)
    assert "no complete checkpoint in" in _one_line_error(str(tmp_path / "fresh_workdir"))
    assert "checkpoint step 7 not found" in _one_line_error(ckpt, 7) and "(it has steps 0, 5)" in \
        _one_line_error(workdir, 7)
    assert "has no model config" in _one_line_error(_bad(tmp_path, "nomodel", config={"vocabulary": None}))
    msg = _one_line_error(_bad(tmp_path, "typo", config={"model": {**CFG.to_dict(), "d_modle": 8}}))
    assert "has a bad model config" in msg and "d_modle (did you mean d_model?)" in msg
    unreadable = _bad(tmp_path, "unreadable")
    (tmp_path / "unreadable" / "0" / "config" / "metadata").write_text("{broken")
    assert "cannot read config" in _one_line_error(unreadable)
    short = _params(1)
    del short["decoder"]["logits_dense"]
    msg = _one_line_error(_bad(tmp_path, "missing", params=short))
    assert "params do not match its model config: missing decoder/logits_dense/kernel" in msg
    wide = _params(1)
    wide["token_embedder"]["embedding"] = np.zeros((64, 32), np.float32)
    msg = _one_line_error(_bad(tmp_path, "shape", params=wide))
    assert "param token_embedder/embedding has shape [64, 32], expected [64, 16]" in msg
