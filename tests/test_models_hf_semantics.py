"""Our T5 semantics against Hugging Face transformers' T5, through golden files
made by HF itself (no torch needed here):

* tests/fixtures/hf_t5_1_{0,1}/ -- tiny random T5.1.0 (ReLU, tied embeddings) and
  T5.1.1 (gated-GELU, untied) models with reference logits, made by
  tools/make_hf_fixtures.py (the converter's fixtures; this test maps the
  weights with its own small name mapping, independent of the converter).
* tests/fixtures/models_hf_relpos_buckets.npz -- HF's
  T5Attention._relative_position_bucket(arange(-1000, 1001), ...) for
  (bidirectional, num_buckets, max_distance) in {T, F} x {(32,128), (64,256),
  (16,32)}, saved as int8; made with transformers 5.24 / torch 2.13 by:
      rp = torch.arange(-1000, 1001)
      T5Attention._relative_position_bucket(rp, bidirectional=bd, num_buckets=nb,
                                             max_distance=md).numpy().astype(np.int8)
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from t5x_lite.models import ModelConfig, build_model, decode_step, init_decode_state, model_logits
from t5x_lite.models.layers import relative_position_bucket

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def test_relative_position_buckets_match_hf():
    z = np.load(os.path.join(FIX, "models_hf_relpos_buckets.npz"))
    assert len(z.files) == 6
    for name in z.files:
        kv = dict(item.split("=") for item in name.split(","))
        ours = relative_position_bucket(jnp.arange(-1000, 1001), kv["bidirectional"] == "True",
                                        int(kv["num_buckets"]), int(kv["max_distance"]))
        np.testing.assert_array_equal(np.asarray(ours), z[name].astype(np.int32), err_msg=name)


def _hf_to_ours(w: dict, cfg: ModelConfig) -> dict:
    d, h, k = cfg.d_model, cfg.num_heads, cfg.d_kv
    qkv = lambda a: a.T.reshape(d, h, k)        # torch Linear [H*K, D] -> (D, H, K)
    out = lambda a: a.T.reshape(h, k, d)        # torch Linear [D, H*K] -> (H, K, D)

    def attn(prefix):
        return {"query": {"kernel": qkv(w[f"{prefix}.q.weight"])}, "key": {"kernel": qkv(w[f"{prefix}.k.weight"])},
                "value": {"kernel": qkv(w[f"{prefix}.v.weight"])}, "out": {"kernel": out(w[f"{prefix}.o.weight"])}}

    p = {"token_embedder": {"embedding": w["shared.weight"]}}
    for stack, n in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
        s = p[stack] = {
            "relpos_bias": {"embedding": w[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]},
            f"{stack}_norm": {"scale": w[f"{stack}.final_layer_norm.weight"]}}
        for i in range(n):
            b = f"{stack}.block.{i}.layer"
            if stack == "encoder":
                layer = {"attention": attn(f"{b}.0.SelfAttention"),
                         "pre_attention_layer_norm": {"scale": w[f"{b}.0.layer_norm.weight"]}}
                j = 1
            else:
                layer = {"self_attention": attn(f"{b}.0.SelfAttention"),
                         "pre_self_attention_layer_norm": {"scale": w[f"{b}.0.layer_norm.weight"]},
                         "encoder_decoder_attention": attn(f"{b}.1.EncDecAttention"),
                         "pre_cross_attention_layer_norm": {"scale": w[f"{b}.1.layer_norm.weight"]}}
                j = 2
            layer["mlp"] = {name: {"kernel": w[f"{b}.{j}.DenseReluDense.{name}.weight"].T}
                            for name in ("wi", "wi_0", "wi_1", "wo") if f"{b}.{j}.DenseReluDense.{name}.weight" in w}
            layer["pre_mlp_layer_norm"] = {"scale": w[f"{b}.{j}.layer_norm.weight"]}
            s[f"layers_{i}"] = layer
    if not cfg.tie_embeddings:
        p["decoder"]["logits_dense"] = {"kernel": w["lm_head.weight"].T}
    return p


@pytest.mark.parametrize("name", ["hf_t5_1_0", "hf_t5_1_1"])
@pytest.mark.slow
def test_logits_and_cached_decoding_match_hf(name):
    from safetensors.numpy import load_file
    d = os.path.join(FIX, name)
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    ref = np.load(os.path.join(d, "reference.npz"))
    gated = c["feed_forward_proj"].startswith("gated")
    assert c["dense_act_fn"] in (("gelu_new",) if gated else ("relu",))
    cfg = ModelConfig(vocab_size=c["vocab_size"], d_model=c["d_model"], num_heads=c["num_heads"], d_kv=c["d_kv"],
                      d_ff=c["d_ff"], num_encoder_layers=c["num_layers"], num_decoder_layers=c["num_decoder_layers"],
                      mlp_activations=("gelu", "linear") if gated else ("relu",),
                      tie_embeddings=c["tie_word_embeddings"], layer_norm_epsilon=c["layer_norm_epsilon"],
                      relative_attention_num_buckets=c["relative_attention_num_buckets"],
                      relative_attention_max_distance=c["relative_attention_max_distance"])
    # shapes only (no random init), then the HF weights
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0))))
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, _hf_to_ours(
        load_file(os.path.join(d, "model.safetensors")), cfg)))
    model = nnx.merge(graphdef, state)
    enc = (ref["encoder_input_ids"] * ref["encoder_attention_mask"]).astype(np.int32)
    dec = ref["decoder_input_tokens"].astype(np.int32)
    logits = np.asarray(nnx.jit(model_logits)(model, {"encoder_input_tokens": enc, "decoder_input_tokens": dec}))
    real = ref["decoder_loss_weights"] > 0
    np.testing.assert_allclose(logits[real], ref["logits"][real], atol=2e-5, rtol=1e-5)
    # the KV-cache path agrees with HF too (first 6 target positions, teacher-forced)
    step_logits, state = nnx.jit(init_decode_state, static_argnums=2)(model, {"encoder_input_tokens": enc}, 6)
    step = nnx.jit(decode_step)
    for t in range(6):
        rows = real[:, t]
        np.testing.assert_allclose(np.asarray(step_logits)[rows], ref["logits"][rows, t], atol=2e-5, rtol=1e-5)
        step_logits, state = step(model, state, jnp.asarray(dec[:, t + 1]))
