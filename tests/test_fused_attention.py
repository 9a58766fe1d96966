"""model.attention_impl: the fused path (jax.nn.dot_product_attention, here implementation="xla" on CPU)
equals the einsum path for every mask the models build (padding, causal, prefix LM, packed segments,
cross-attention) with T5's relative position bias; whole models give the same logits, gradients and
greedy tokens; dropout falls back to einsum; "auto" is einsum on CPU; bad values are one-line errors.
The "cudnn" test needs a GPU and is skipped elsewhere."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from t5x_lite.decoding import decode, make_prompt
from t5x_lite.errors import UserError
from t5x_lite.models import ModelConfig, build_model, model_logits
from t5x_lite.models.attention import (ATTENTION_IMPLS, MultiHeadAttention, dot_product_attention,
                                       fused_dot_product_attention, resolve_attention_impl)
from t5x_lite.models.layers import RelativePositionBias, attention_mask

B, L, H, K = 3, 8, 4, 8
TINY = dict(vocab_size=53, d_model=32, num_heads=4, d_kv=8, d_ff=48, num_encoder_layers=1, num_decoder_layers=1)
# packed rows (two examples + padding), one short row, one full row
SEG = np.array([[1, 1, 1, 2, 2, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0], [1] * 8], np.int32)


def _qkv(dtype, lq=L, lk=L, seed=0):
    r = np.random.RandomState(seed)
    q = jnp.asarray(r.randn(B, lq, H, K), dtype)
    k, v = (jnp.asarray(r.randn(B, lk, H, K), dtype) for _ in range(2))
    return q, k, v


def _relpos(bidirectional, lq=L, lk=L):
    table = RelativePositionBias(8, 16, H, 32, bidirectional=bidirectional, param_dtype=jnp.float32,
                                 rngs=nnx.Rngs(3))
    table.embedding[...] = table.embedding[...] * 20.0   # make the bias matter next to q.k
    return table(jnp.arange(lq), jnp.arange(lk))          # [1, H, Lq, Lk] float32


def _case(name):
    """(lq, lk, bias, mask) as the networks build them."""
    seg = jnp.asarray(SEG)
    if name == "encoder_padding":
        pad = jnp.asarray((np.arange(L)[None] < np.array([[5], [2], [8]])).astype(np.int32))
        return L, L, _relpos(True), attention_mask(pad, pad, key_valid=pad != 0)
    if name == "causal":
        ones = jnp.ones((B, L), jnp.int32)
        return L, L, _relpos(False), attention_mask(ones, ones, causal=True)
    if name == "prefix_lm":
        ones = jnp.ones((B, L), jnp.int32)
        dca = jnp.asarray((np.arange(L)[None] <= np.array([[0], [3], [6]])).astype(np.int32))
        return L, L, _relpos(True), attention_mask(ones, ones, causal=True, bidirectional_q=dca, bidirectional_k=dca)
    if name == "packed_segments":
        return L, L, _relpos(True), attention_mask(seg, seg, key_valid=seg != 0)
    if name == "packed_causal":
        return L, L, _relpos(False), attention_mask(seg, seg, causal=True)
    if name == "cross_attention":   # decoder queries (Lq=5) over padded encoder keys, no bias
        lq = 5
        return lq, L, None, jnp.broadcast_to((seg != 0)[:, None, None, :], (B, 1, lq, L))
    if name == "decode_bias_per_example":   # the KV-cache path: bias [B, H, 1, Lc], mask [B, 1, 1, Lc]
        idx = jnp.array([0, 3, 7])
        table = RelativePositionBias(8, 16, H, 32, bidirectional=False, param_dtype=jnp.float32, rngs=nnx.Rngs(4))
        table.embedding[...] = table.embedding[...] * 20.0
        bias = table(idx[:, None], jnp.arange(L))
        return 1, L, bias, (jnp.arange(L)[None, :] <= idx[:, None])[:, None, None, :]
    raise KeyError(name)


CASES = ("encoder_padding", "causal", "prefix_lm", "packed_segments", "packed_causal", "cross_attention",
         "decode_bias_per_example")


@pytest.mark.parametrize("case,dtype,atol", [(c, jnp.float32, 1e-5) for c in CASES] +
                         [(c, jnp.bfloat16, 3e-2) for c in ("prefix_lm", "cross_attention")])
def test_fused_xla_equals_einsum(case, dtype, atol):
    lq, lk, bias, mask = _case(case)
    q, k, v = _qkv(dtype, lq, lk)
    want = np.asarray(dot_product_attention(q, k, v, bias, mask).astype(jnp.float32))
    got = jax.jit(lambda *a: fused_dot_product_attention(*a, implementation="xla"))(q, k, v, bias, mask)
    assert got.shape == (B, lq, H, K) and got.dtype == dtype
    got = np.asarray(got.astype(jnp.float32))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=atol, rtol=0)
    # the bias and the mask both change the answer (so the comparison above tests them)
    if bias is not None:
        no_bias = np.asarray(fused_dot_product_attention(q, k, v, None, mask, implementation="xla")
                             .astype(jnp.float32))
        assert np.abs(no_bias - got).max() > 10 * atol
    no_mask = np.asarray(fused_dot_product_attention(q, k, v, bias, None, implementation="xla").astype(jnp.float32))
    assert np.abs(no_mask - got).max() > 10 * atol


@pytest.mark.parametrize("impl", ["xla", "einsum"])
def test_fully_masked_query_rows_are_uniform_not_nan(impl):
    """Padding query rows (segment 0 in the packed encoder mask) see no key: every path gives the uniform
    average of the values (the logits all get the same large negative value), never NaN."""
    seg = jnp.asarray(SEG)
    mask = attention_mask(seg, seg, key_valid=seg != 0)
    q, k, v = _qkv(jnp.float32)
    bias = _relpos(True)
    if impl == "einsum":
        out = dot_product_attention(q, k, v, bias, mask)
    else:
        out = fused_dot_product_attention(q, k, v, bias, mask, implementation=impl)
    out = np.asarray(out)
    assert np.isfinite(out).all()
    padded = ~np.asarray(SEG != 0)                        # [B, L]
    assert padded.any()
    uniform = np.broadcast_to(np.asarray(v).mean(axis=1)[:, None], out.shape)
    np.testing.assert_allclose(out[padded], uniform[padded], atol=1e-5)
    # and the gradient through those rows is finite too
    g = jax.grad(lambda q: jnp.sum(fused_dot_product_attention(q, k, v, bias, mask, implementation="xla")))(q)
    assert np.isfinite(np.asarray(g)).all()


def _pair(arch, **kw):
    """Two models with identical params, attention_impl einsum and xla."""
    base = dict(TINY, architecture=arch, **kw)
    a = build_model(ModelConfig(attention_impl="einsum", **base), nnx.Rngs(0))
    b = build_model(ModelConfig(attention_impl="xla", **base), nnx.Rngs(0))
    pa, pb = (nnx.state(m, nnx.Param).to_pure_dict() for m in (a, b))
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), pa, pb))
    return a, b


def _batch(arch, packed=False):
    r = np.random.RandomState(1)
    tok = lambda: jnp.asarray(r.randint(2, 53, (B, L)) * (SEG != 0), jnp.int32)
    if arch == "encoder_decoder":
        batch = {"encoder_input_tokens": tok(), "decoder_input_tokens": tok()}
        if packed:
            batch.update(encoder_segment_ids=jnp.asarray(SEG), decoder_segment_ids=jnp.asarray(SEG))
        return batch
    if arch == "decoder_only":
        return {"decoder_input_tokens": tok(), "decoder_segment_ids": jnp.asarray(SEG),
                "decoder_causal_attention": jnp.asarray((np.arange(L)[None] <= np.array([[1], [0], [4]]))
                                                        .astype(np.int32))}
    return {"encoder_input_tokens": tok(), "encoder_segment_ids": jnp.asarray(SEG)}


def _attention_impls(model):
    return {m.attention_impl for _, m in nnx.iter_graph(model) if isinstance(m, MultiHeadAttention)}


@nnx.jit
def _logits_and_grads(model, batch, w):
    """Teacher-forced logits and the param gradients of sum(logits * w) (one compile per model)."""
    def loss(m):
        logits = model_logits(m, batch)
        return jnp.sum(logits * w), logits
    (_, logits), grads = nnx.value_and_grad(loss, has_aux=True)(model)
    return logits, grads


@pytest.mark.parametrize("arch,kw,packed", [("encoder_decoder", {}, True),          # padding + packed + cross
                                            ("decoder_only", {"decoder_mask": "prefix"}, False)])  # causal + prefix
def test_whole_model_logits_and_gradients_match(arch, kw, packed):
    a, b = _pair(arch, **kw)
    assert _attention_impls(a) == {"einsum"} and _attention_impls(b) == {"xla"}
    batch = _batch(arch, packed)
    w = jax.random.normal(jax.random.key(2), (B, L, TINY["vocab_size"]))
    la, ga = _logits_and_grads(a, batch, w)
    lb, gb = _logits_and_grads(b, batch, w)
    np.testing.assert_allclose(np.asarray(lb), np.asarray(la), atol=1e-5, rtol=0)
    flat_a, flat_b = jax.tree.leaves(nnx.to_pure_dict(ga)), jax.tree.leaves(nnx.to_pure_dict(gb))
    assert len(flat_a) == len(flat_b) > 0
    for x, y in zip(flat_a, flat_b):
        scale = float(jnp.max(jnp.abs(x)))
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=2e-5 * max(scale, 1.0), rtol=0)
    # the relative position table gets its gradient through the fused path's bias
    rel = [g for path, g in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(gb)) if "relpos_bias" in str(path)]
    assert rel and all(float(jnp.abs(g).max()) > 0 for g in rel)


@pytest.mark.parametrize("arch", ["encoder_decoder", "decoder_only"])
def test_greedy_decoding_gives_the_same_tokens(arch):
    a, b = _pair(arch, decoder_mask="prefix") if arch == "decoder_only" else _pair(arch)
    prompt = make_prompt(arch, [[5, 6, 7, 8, 9], [11, 12], [20]])
    ta = decode(a, prompt, method="greedy", max_decode_length=6, eos_id=1)
    tb = decode(b, prompt, method="greedy", max_decode_length=6, eos_id=1)
    assert ta.shape == (3, 6)
    np.testing.assert_array_equal(tb, ta)


def test_dropout_falls_back_to_einsum():
    """With attention dropout active, xla runs the einsum path (same key -> the very same logits);
    deterministic calls use the fused path."""
    a, b = _pair("decoder_only", dropout_rate=0.2)
    batch = _batch("decoder_only")
    key = jax.random.key(7)
    la = model_logits(a, batch, deterministic=False, dropout_rng=key)
    lb = model_logits(b, batch, deterministic=False, dropout_rng=key)
    np.testing.assert_array_equal(np.asarray(lb), np.asarray(la))
    assert not np.allclose(np.asarray(la), np.asarray(model_logits(a, batch)), atol=1e-3)   # dropout did act
    q, k, _ = _qkv(jnp.float32)
    assert resolve_attention_impl("xla", q, k, dropout_active=True) == "einsum"
    assert resolve_attention_impl("xla", q, k, dropout_active=False) == "xla"


def test_auto_rule(monkeypatch):
    q32, k32, _ = _qkv(jnp.float32)
    q16, k16, _ = _qkv(jnp.bfloat16)
    assert jax.default_backend() == "cpu"
    assert resolve_attention_impl("auto", q16, k16, dropout_active=False) == "einsum"   # CPU default
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_attention_impl("auto", q16, k16, dropout_active=False) == "cudnn"
    assert resolve_attention_impl("auto", q32, k32, dropout_active=False) == "einsum"   # float32 compute
    assert resolve_attention_impl("auto", q16, k16, dropout_active=True) == "einsum"    # attention dropout
    assert resolve_attention_impl("auto", q16[:, :1], k16, dropout_active=False) == "einsum"   # odd Lq
    assert resolve_attention_impl("auto", q16[..., :6], k16[..., :6], dropout_active=False) == "einsum"  # d_kv 6


def test_bad_attention_impl_is_one_line_user_error():
    with pytest.raises(UserError, match=r"model\.attention_impl must be one of auto\|einsum\|xla\|cudnn, got 'flash'"):
        ModelConfig(attention_impl="flash", **TINY).validate()
    with pytest.raises(UserError) as e:
        ModelConfig.from_dict(dict(ModelConfig(**TINY).to_dict(), attention_impl="XLA"))
    assert "\n" not in str(e.value) and "attention_impl" in str(e.value)
    with pytest.raises(UserError, match="needs dtype bfloat16"):
        ModelConfig(attention_impl="cudnn", dtype="float32", **TINY).validate()
    assert ModelConfig().attention_impl == "auto" and set(ATTENTION_IMPLS) == {"auto", "einsum", "xla", "cudnn"}


def test_cudnn_off_gpu_is_a_user_error():
    q, k, v = _qkv(jnp.bfloat16)
    with pytest.raises(UserError, match="needs a GPU backend"):
        fused_dot_product_attention(q, k, v, None, None, implementation="cudnn")


def test_every_attention_layer_gets_the_setting():
    """Encoder, decoder self/cross, decoder-only, BERT and ELECTRA (generator too) all read model.attention_impl."""
    expected = {"encoder_decoder": 3, "decoder_only": 1, "encoder_only": 1, "electra": 2}   # 1-layer stacks
    for arch, count in expected.items():
        m = nnx.eval_shape(lambda: build_model(ModelConfig(architecture=arch, attention_impl="xla", **TINY),
                                               nnx.Rngs(0)))
        n = sum(isinstance(x, MultiHeadAttention) for _, x in nnx.iter_graph(m))
        assert n == count and _attention_impls(m) == {"xla"}, arch


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU (JAX_PLATFORMS=cuda)")
@pytest.mark.parametrize("case", ["encoder_padding", "causal", "packed_segments", "cross_attention"])
def test_cudnn_equals_einsum_on_gpu(case):
    lq, lk, bias, mask = _case(case)
    if lq % 2:
        lq = 6
        mask = mask[:, :, :1].repeat(lq, axis=2)
    q, k, v = _qkv(jnp.bfloat16, lq, lk)
    want = np.asarray(dot_product_attention(q, k, v, bias, mask).astype(jnp.float32))
    got = np.asarray(fused_dot_product_attention(q, k, v, bias, mask, implementation="cudnn").astype(jnp.float32))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=5e-2, rtol=0)
    assert resolve_attention_impl("auto", q, k, dropout_active=False) == "cudnn"
