"""Mesh construction, logical-rule specs, optimizer-state shardings, and the same
losses on an 8-device (data=2, fsdp=2, tensor=2) mesh as on one device."""

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from t5x_lite import partitioning
from t5x_lite.errors import UserError
from t5x_lite.models.config import ModelConfig
from t5x_lite.train import optimizers, step as step_lib

pytestmark = pytest.mark.slow  # end-to-end / multi-device: the whole-suite tier

MODEL = ModelConfig(vocab_size=256, d_model=128, num_heads=2, d_kv=16, d_ff=256, num_encoder_layers=1,
                    num_decoder_layers=1)

# Smaller model for the compiled comparisons; min_dim_size_to_factor=32 keeps Adafactor factored.
SMALL = ModelConfig(vocab_size=128, d_model=64, num_heads=2, d_kv=16, d_ff=128, num_encoder_layers=1,
                    num_decoder_layers=1)
ADAFACTOR = {"name": "adafactor", "schedule": "constant", "learning_rate": 0.01, "min_dim_size_to_factor": 32}


def test_resolve_mesh_shape_fills_one_axis():
    assert partitioning.resolve_mesh_shape({"data": -1, "fsdp": 1, "tensor": 1}, 8) == (8, 1, 1)
    assert partitioning.resolve_mesh_shape({"data": 2, "fsdp": -1, "tensor": 2}, 8) == (2, 2, 2)
    for bad in ({"data": -1, "fsdp": -1, "tensor": 1}, {"data": 3, "fsdp": 1, "tensor": 1},
                {"data": -1, "fsdp": 3, "tensor": 1}, {"data": 0, "fsdp": 1, "tensor": 8}, {"data": 8}):
        with pytest.raises(UserError):
            partitioning.resolve_mesh_shape(bad, 8)


def test_make_mesh_uses_auto_axes():
    mesh = partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert tuple(mesh.axis_types) == (AxisType.Auto,) * 3
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}


def test_logical_to_spec_rules():
    mesh = partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert partitioning.logical_to_spec(("vocab", "embed"), (256, 128), mesh) == P("tensor", "fsdp")
    assert partitioning.logical_to_spec(("embed", "mlp"), (128, 256), mesh) == P("fsdp", "tensor")
    # not divisible -> replicated; kv/relpos are replicated by the table
    assert partitioning.logical_to_spec(("vocab", "embed"), (255, 128), mesh) == P(None, "fsdp")
    assert partitioning.logical_to_spec(("relpos_buckets", "heads"), (32, 2), mesh) == P(None, "tensor")
    # a mesh axis is never used twice in one spec
    assert partitioning.logical_to_spec(("mlp", "vocab"), (256, 256), mesh) == P("tensor", None)
    assert partitioning.logical_to_spec(("batch", "length"), (8, 4), mesh) == P(("data", "fsdp"), None)
    with pytest.raises(ValueError):
        partitioning.logical_to_spec(("embedding",), (4,), mesh)


@pytest.fixture(scope="module")
def bundle():
    return step_lib.bundle_from_config(MODEL)


@pytest.fixture(scope="module")
def small():
    return step_lib.bundle_from_config(SMALL)


def test_adafactor_state_shardings_follow_its_own_shapes(bundle):
    mesh = partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    tx, _ = optimizers.make_optimizer({"name": "adafactor", "schedule": "constant", "learning_rate": 0.01}, 10)
    abstract, specs = step_lib.state_specs(bundle, tx, mesh)
    assert specs["params"]["token_embedder"]["embedding"] == P("tensor", "fsdp")
    flat_specs = jax.tree_util.tree_flatten_with_path(specs["opt_state"], is_leaf=lambda x: isinstance(x, P))[0]
    flat_shapes = dict((jax.tree_util.keystr(p), a.shape) for p, a in
                       jax.tree_util.tree_flatten_with_path(abstract["opt_state"])[0])
    by_key = {jax.tree_util.keystr(p): s for p, s in flat_specs}
    for key, spec in by_key.items():
        assert len(spec) <= len(flat_shapes[key]), key
    # the (vocab=256, embed=128) embedding's factored statistics: the 256-vector keeps
    # the vocab sharding, the 128-vector the embed sharding
    factored = {flat_shapes[k]: by_key[k] for k in by_key
                if ("v_row" in k or "v_col" in k) and "token_embedder" in k}
    assert factored == {(256,): P("tensor"), (128,): P("fsdp")}
    # creating the state directly into its shardings (factored Adafactor vectors included) must work
    state = step_lib.init_state(bundle, tx, partitioning.named(mesh, specs), seed=0)
    emb = state["params"]["token_embedder"]["embedding"]
    assert emb.sharding.spec == P("tensor", "fsdp") and len(emb.addressable_shards) == 8


def _batches(n, batch=8, lin=16, lt=8, vocab=128):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        tgt = rng.integers(2, vocab, (batch, lt)).astype(np.int32)
        tgt[:, -2:] = 0  # some padding so the weights matter
        out.append({
            "encoder_input_tokens": rng.integers(2, vocab, (batch, lin)).astype(np.int32),
            "decoder_target_tokens": tgt,
            "decoder_input_tokens": np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], 1),
            "decoder_loss_weights": (tgt > 0).astype(np.float32),
        })
    return out


def _losses(bundle, mesh_cfg, devices, microbatches=1, norm="sum"):
    mesh = partitioning.make_mesh(mesh_cfg, jax.devices()[:devices])
    tx, sched = optimizers.make_optimizer(ADAFACTOR, 10)
    _, specs = step_lib.state_specs(bundle, tx, mesh)
    shard = partitioning.named(mesh, specs)
    state = step_lib.init_state(bundle, tx, shard, seed=0)
    train_step = step_lib.make_train_step(bundle, tx, sched, mesh=mesh, state_shardings=shard,
                                          num_microbatches=microbatches, loss_normalization=norm)
    out = []
    for b in _batches(1) * 3:  # the same batch: the loss must fall
        state, m = train_step(state, partitioning.global_batch(b, mesh))
        out.append(float(m["loss"]))
    return np.array(out)


@pytest.fixture(scope="module")
def one_device(small):
    return _losses(small, {"data": 1, "fsdp": 1, "tensor": 1}, 1, norm="mean")


def test_eight_device_mesh_matches_one_device(small, one_device):
    eight = _losses(small, {"data": 2, "fsdp": 2, "tensor": 2}, 8, norm="mean")
    assert one_device[-1] < one_device[0]  # it trains
    np.testing.assert_allclose(eight, one_device, atol=1e-5, rtol=0)


def test_gradient_accumulation_matches_full_batch(small, one_device):
    full = one_device
    accum = _losses(small, {"data": 2, "fsdp": 2, "tensor": 1}, 4, microbatches=2, norm="mean")
    np.testing.assert_allclose(accum, full, atol=1e-5, rtol=0)


def test_global_batch_is_sharded_over_data_and_fsdp():
    mesh = partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    x = partitioning.global_batch({"t": np.arange(32, dtype=np.int32).reshape(8, 4)}, mesh)["t"]
    assert x.shape == (8, 4) and x.sharding.spec == P(("data", "fsdp"))
    np.testing.assert_array_equal(np.asarray(x), np.arange(32).reshape(8, 4))
    with pytest.raises(UserError):
        partitioning.check_batch_divisible(6, mesh, num_microbatches=1)
