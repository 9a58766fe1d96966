"""Parameter and FLOP counts (models/flops.py) against the real parameter trees
and XLA's own FLOP count, and the Table-2 relations of Raffel et al. (2020).

All model trees here come from nnx.eval_shape (shapes only, no compute)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from t5x_lite.models import ModelConfig, build_model, count_params, flops_per_sequence, model_logits, table2_configs
from t5x_lite.models import layers

TINY = dict(vocab_size=61, d_model=32, num_heads=4, d_kv=8, d_ff=48, num_encoder_layers=2, num_decoder_layers=3)
# T5.1.0-base, the paper's baseline (Table 2 is about base-sized stacks).
BASE = ModelConfig(vocab_size=32128, d_model=768, num_heads=12, d_kv=64, d_ff=3072, num_encoder_layers=12,
                   num_decoder_layers=12, mlp_activations=("relu",), tie_embeddings=True)


def tree_params(cfg: ModelConfig) -> int:
    model = nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0)))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


VARIANTS = [
    dict(architecture="encoder_decoder"),
    dict(architecture="encoder_decoder", tie_embeddings=True, mlp_activations=("relu",)),
    dict(architecture="encoder_decoder", shared_encoder_decoder=True, num_encoder_layers=3, scan_layers=True),
    dict(architecture="decoder_only", position_embedding="learned", max_position_embeddings=40),
    dict(architecture="decoder_only", decoder_mask="prefix", position_embedding="sinusoidal", tie_embeddings=True),
    dict(architecture="encoder_only", num_classes=5, scan_layers=True),
    dict(architecture="encoder_only", mlp_activations=("gelu", "linear", "silu")),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_count_params_matches_tree(variant):
    cfg = ModelConfig(**{**TINY, **variant})
    assert count_params(cfg) == tree_params(cfg)


def test_t5_base_size():
    # HF t5-base (T5.1.0) has 222,903,552 parameters (relative-bias tables included).
    assert count_params(BASE) == tree_params(BASE) == 222_903_552


@pytest.mark.parametrize("arch", ["encoder_decoder", "decoder_only", "encoder_only"])
def test_flops_match_xla_cost_analysis(arch, monkeypatch):
    """Our analytic forward FLOPs (without causal halving, i.e. what the dense
    kernels execute) vs XLA's count of the lowered forward pass.  XLA also counts
    elementwise work (softmax, norms, activations), worth ~1-2% here.  The relative
    position bias is looked up with a gather, as on accelerators: on CPU it is a
    one-hot matmul (models/layers.py), which XLA counts as FLOPs that are no model's
    (~4% at this tiny size, 0.15% of T5.1.1-small's step)."""
    monkeypatch.setattr(layers, "ONE_HOT_MAX", 0)
    cfg = ModelConfig(architecture=arch, vocab_size=512, d_model=128, num_heads=4, d_kv=32, d_ff=512,
                      num_encoder_layers=2, num_decoder_layers=2)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0))))
    lin, lt = 64, 32
    s = lambda n: jax.ShapeDtypeStruct((1, n), jnp.int32)
    batch = {"encoder_decoder": {"encoder_input_tokens": s(lin), "decoder_input_tokens": s(lt)},
             "decoder_only": {"decoder_input_tokens": s(lin + lt)},
             "encoder_only": {"encoder_input_tokens": s(lin)}}[arch]
    xla = jax.jit(lambda st, b: model_logits(nnx.merge(graphdef, st), b)).lower(state, batch).cost_analysis()["flops"]
    ours = flops_per_sequence(cfg, lin, lt if arch != "encoder_only" else 0, causal_halving=False)["forward"]
    assert ours <= xla <= 1.03 * ours, (ours, xla)
    halved = flops_per_sequence(cfg, lin, lt if arch != "encoder_only" else 0)
    if arch != "encoder_only":
        assert halved["forward"] < ours                       # causal attention counted at half
    assert halved["train"] == 3 * halved["forward"]


def test_table2_relations():
    """Table 2: enc-dec 2P & M, shared P & M, 6+6 layers P & M/2, LM P & M, prefix LM P & M.

    P := params of the L-layer language model (one stack + embeddings), M := its
    training FLOPs on inputs+targets concatenated (512 + 114 tokens, the
    span-corruption lengths).  Tolerances, and why:
      * cross-attention: the paper counts an L+L enc-dec as 2P although every
        decoder layer has an extra attention block (~10% of all params).  With the
        shared embedding counted once, enc-dec lands within 5% of 2P at base size;
        enc-dec shared and 6+6 carry the cross-attention on top of P (~26% / ~13%).
      * FLOPs: the enc-dec runs inputs through the encoder and targets through the
        decoder, the LM runs both through one stack: identical projection FLOPs,
        but the LM computes logits at all 626 positions, the enc-dec adds
        cross-attention; they agree within 10%.  6+6 layers is half of everything
        but the logits layer, so within 10% of M/2."""
    cfgs = table2_configs(BASE)
    assert set(cfgs) == {"encoder_decoder", "enc_dec_shared", "enc_dec_6_layers", "language_model", "prefix_lm"}
    assert cfgs["enc_dec_6_layers"].num_encoder_layers == cfgs["enc_dec_6_layers"].num_decoder_layers == 6
    assert cfgs["language_model"].num_decoder_layers == 12 and cfgs["prefix_lm"].decoder_mask == "prefix"
    params = {k: count_params(c) for k, c in cfgs.items()}
    for k in ("enc_dec_shared", "language_model"):     # the counting helper agrees with the real trees
        assert params[k] == tree_params(cfgs[k])
    P = params["language_model"]
    assert params["prefix_lm"] == P
    assert abs(params["encoder_decoder"] / (2 * P) - 1) < 0.05
    assert 1.0 < params["enc_dec_shared"] / P < 1.3
    assert 1.0 < params["enc_dec_6_layers"] / P < 1.2
    # exact decomposition: enc-dec = LM + encoder stack + cross-attention blocks (+ their norms)
    d = BASE.d_model
    cross = 12 * (4 * d * 12 * 64 + d)
    encoder_stack = P - BASE.vocab_size * d
    assert params["encoder_decoder"] == P + encoder_stack + cross

    lin, lt = 512, 114
    M = flops_per_sequence(cfgs["language_model"], lin, lt)["train"]
    flops = {k: flops_per_sequence(c, lin, lt)["train"] for k, c in cfgs.items()}
    for k in ("encoder_decoder", "enc_dec_shared", "prefix_lm"):
        assert abs(flops[k] / M - 1) < 0.10, (k, flops[k] / M)
    assert flops["enc_dec_shared"] == flops["encoder_decoder"]   # sharing params does not save compute
    assert abs(flops["enc_dec_6_layers"] / (M / 2) - 1) < 0.10
    assert flops["prefix_lm"] > M                                 # the fully-visible block attends more


def test_table2_configs_build_and_keep_base_fields():
    base = ModelConfig(**{**TINY, "num_encoder_layers": 4, "num_decoder_layers": 4, "dropout_rate": 0.1})
    for name, cfg in table2_configs(base).items():
        assert cfg.d_model == base.d_model and cfg.dropout_rate == 0.1, name
        cfg.validate()
        assert count_params(cfg) == tree_params(cfg), name
    assert dataclasses.asdict(base)["num_encoder_layers"] == 4
