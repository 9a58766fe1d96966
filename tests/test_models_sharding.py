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
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(sharded_model, nnx.Param)))
    model = build_model(cfg, nnx.Rngs(123))
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)
    return model


@pytest.mark.parametrize("scan", [False, True])
def test_sharded_init_and_forward(mesh, scan):
    cfg = ModelConfig(architecture="encoder_decoder", scan_layers=scan, **TINY)
    rng = np.random.RandomState(0)
    batch = {"encoder_input_tokens": rng.randint(1, 64, (4, 8)).astype(np.int32),
             "decoder_input_tokens": rng.randint(1, 64, (4, 6)).astype(np.int32)}
    with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
        model = nnx.jit(lambda: build_model(cfg, nnx.Rngs(0)))()
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        lead = (None,) if scan else ()
        layer = params["encoder"]["layers"] if scan else params["encoder"]["layers_0"]
        expect = [
            (params["token_embedder"]["embedding"], P("tensor", "fsdp")),
            (params["decoder"]["logits_dense"]["kernel"], P("fsdp", "tensor")),
            (params["decoder"]["relpos_bias"]["embedding"], P(None, "tensor")),
            (layer["attention"]["query"]["kernel"], P(*lead, "fsdp", "tensor")),     # (embed, heads, kv)
            (layer["attention"]["out"]["kernel"], P(*lead, "tensor", None, "fsdp")),  # (heads, kv, embed)
            (layer["mlp"]["wi_0"]["kernel"], P(*lead, "fsdp", "tensor")),
            (layer["mlp"]["wo"]["kernel"], P(*lead, "tensor", "fsdp")),
            (layer["pre_mlp_layer_norm"]["scale"], P(*lead, "fsdp")),
        ]
        for arr, spec in expect:
            assert arr.sharding.spec == spec
        emb = params["token_embedder"]["embedding"]
        assert emb.addressable_shards[0].data.shape == (32, 16)          # vocab/2 (tensor), embed/2 (fsdp)
        q = layer["attention"]["query"]["kernel"]
        assert q.addressable_shards[0].data.shape == (*((2,) if scan else ()), 16, 2, 8)
        logits = nnx.jit(model_logits)(model, batch)
        assert logits.sharding.spec == P(("data", "fsdp"), None, "tensor")
        logits = np.asarray(logits)
    ref = np.asarray(model_logits(_single_device_copy(cfg, model), batch))
    np.testing.assert_allclose(logits, ref, atol=1e-5, rtol=0)


def test_sharded_decoding_matches_single_device(mesh):
    cfg = ModelConfig(architecture="decoder_only", **TINY)
    prompt = {"decoder_prompt_tokens": np.array([[5, 6, 7], [8, 9, 0], [3, 0, 0], [4, 4, 4]], np.int32),
              "prompt_lengths": np.array([3, 2, 1, 3], np.int32)}
    init = nnx.jit(init_decode_state, static_argnums=2)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
        model = nnx.jit(lambda: build_model(cfg, nnx.Rngs(0)))()
        logits, state = init(model, prompt, 4)
        logits = np.asarray(logits)
    ref, _ = init_decode_state(_single_device_copy(cfg, model), prompt, 4)
    np.testing.assert_allclose(logits, np.asarray(ref), atol=1e-5, rtol=0)
    assert state["cache_k"].shape == (4, 2, 7, 4, 8)
