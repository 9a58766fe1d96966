"""Under an 8-device CPU mesh (data=2, fsdp=2, tensor=2) with the project's
logical axis rules, a model initialised inside jit has really sharded params
and gives the same logits as on one device."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from t5x_lite.models import ModelConfig, build_model, decode_step, init_decode_state, model_logits
from t5x_lite.partitioning import LOGICAL_AXIS_RULES

TINY = dict(vocab_size=64, d_model=32, num_heads=4, d_kv=8, d_ff=48, num_encoder_layers=2, num_decoder_layers=2)


@pytest.fixture(scope="module")
def mesh():
    if jax.device_count() < 8:
        pytest.fail("tests/conftest.py should give 8 CPU devices (JAX_NUM_CPU_DEVICES=8)")
    return jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)


def _single_device_copy(cfg, sharded_model):
    params = jax.tree.map(lambda a: jax.numpy.asarray(np.asarray(a)),
                          nnx.to_pure_dict(nnx.state(sharded_model, nnx.Param)))
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0))))   # shapes only
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


def _spec(arr):
    """PartitionSpec without trailing Nones (abstract arrays keep them, real ones don't)."""
    spec = tuple(arr.sharding.spec)
    while spec and spec[-1] is None:
        spec = spec[:-1]
    return P(*spec)


def _expected_specs(params, scan):
    lead = (None,) if scan else ()
    layer = params["encoder"]["layers"] if scan else params["encoder"]["layers_0"]
    dec = params["decoder"]["layers"] if scan else params["decoder"]["layers_1"]
    return layer, [
        (params["token_embedder"]["embedding"], P("tensor", "fsdp")),             # (vocab, embed)
        (params["decoder"]["logits_dense"]["kernel"], P("fsdp", "tensor")),       # (embed, vocab)
        (params["decoder"]["relpos_bias"]["embedding"], P(None, "tensor")),       # (buckets, heads)
        (layer["attention"]["query"]["kernel"], P(*lead, "fsdp", "tensor")),      # (embed, heads, kv)
        (layer["attention"]["out"]["kernel"], P(*lead, "tensor", None, "fsdp")),  # (heads, kv, embed)
        (layer["mlp"]["wi_0"]["kernel"], P(*lead, "fsdp", "tensor")),             # (embed, mlp)
        (layer["mlp"]["wo"]["kernel"], P(*lead, "tensor", "fsdp")),               # (mlp, embed)
        (layer["pre_mlp_layer_norm"]["scale"], P(*lead, "fsdp")),
        (dec["encoder_decoder_attention"]["key"]["kernel"], P(*lead, "fsdp", "tensor")),
    ]


CFG = ModelConfig(architecture="encoder_decoder", dropout_rate=0.1, **TINY)


@pytest.fixture(scope="module")
def sharded(mesh):
    """An enc-dec model initialised inside jit under the mesh, and its single-device twin."""
    with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
        model = nnx.jit(lambda: build_model(CFG, nnx.Rngs(0)))()
    return model, _single_device_copy(CFG, model)


@pytest.mark.slow
def test_sharded_init_and_forward(mesh, sharded):
    model, single = sharded
    rng = np.random.RandomState(0)
    batch = {"encoder_input_tokens": rng.randint(1, 64, (4, 8)).astype(np.int32),
             "decoder_input_tokens": rng.randint(1, 64, (4, 6)).astype(np.int32)}
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    layer, expect = _expected_specs(params, scan=False)
    for arr, spec in expect:
        assert _spec(arr) == spec
    emb = params["token_embedder"]["embedding"]
    assert emb.addressable_shards[0].data.shape == (32, 16)          # vocab/2 (tensor), embed/2 (fsdp)
    assert layer["attention"]["query"]["kernel"].addressable_shards[0].data.shape == (16, 2, 8)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
        logits = nnx.jit(model_logits)(model, batch)
        assert logits.sharding.spec == P(("data", "fsdp"), None, "tensor")
        logits = np.asarray(logits)
        # dropout masks do not depend on the sharding (partitionable Threefry)
        key = jax.random.key(5)
        dropped = np.asarray(nnx.jit(model_logits, static_argnames="deterministic")(
            model, batch, deterministic=False, dropout_rng=key))
    np.testing.assert_allclose(logits, np.asarray(model_logits(single, batch)), atol=1e-5, rtol=0)
    single_dropped = np.asarray(model_logits(single, batch, deterministic=False, dropout_rng=key))
    assert np.abs(single_dropped - logits).max() > 1e-3
    np.testing.assert_allclose(dropped, single_dropped, atol=1e-5, rtol=0)


def test_scanned_params_get_a_replicated_layers_axis(mesh):
    cfg = ModelConfig(architecture="encoder_decoder", scan_layers=True, **TINY)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
        abstract = nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0)))   # ShapeDtypeStructs with shardings
    params = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
    layer, expect = _expected_specs(params, scan=True)
    assert layer["attention"]["query"]["kernel"].shape == (2, 32, 4, 8)
    for arr, spec in expect:
        assert _spec(arr) == spec


@pytest.mark.slow
def test_sharded_decoding_matches_single_device(mesh, sharded):
    model, single = sharded
    enc = np.array([[5, 6, 7, 8, 9], [8, 9, 0, 0, 0], [3, 0, 0, 0, 0], [4, 4, 4, 4, 0]], np.int32)
    init = nnx.jit(init_decode_state, static_argnums=2)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
        logits, state = init(model, {"encoder_input_tokens": enc}, 4)
        logits2, state = nnx.jit(decode_step)(model, state, np.array([3, 4, 5, 6], np.int32))
        logits, logits2 = np.asarray(logits), np.asarray(logits2)
    ref, ref_state = init_decode_state(single, {"encoder_input_tokens": enc}, 4)
    ref2, _ = decode_step(single, ref_state, np.array([3, 4, 5, 6], np.int32))
    np.testing.assert_allclose(logits, np.asarray(ref), atol=1e-5, rtol=0)
    np.testing.assert_allclose(logits2, np.asarray(ref2), atol=1e-5, rtol=0)
    # one array per layer: cache [B, Lc, H, K], encoder keys [B, H, Lin, K]
    assert [a.shape for a in state["cache_k"]] == [(4, 4, 4, 8)] * 2
    assert [a.shape for a in state["cross_k"]] == [(4, 4, 5, 8)] * 2
