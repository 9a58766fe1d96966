"""The rewrites made for XLA:CPU compute the same values and gradients as the plain formulations
they replace (they exist because XLA:CPU runs the plain ones slowly; see docs/performance.md):
attention's hand-written gradient (models/attention.py; the shared bias's batch sum as slice
additions on CPU), and the relative position bias as a one-hot matmul instead of a gather."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from t5x_lite.models import attention, layers


def _plain_attention(q, k, v, bias, mask, keep, rate):
    """The forward formula, differentiated by JAX's autodiff (the reference for the hand-written VJP)."""
    return attention._attention_forward(q, k, v, bias, mask, keep, rate)[0]


def _case(batch, dtype, lq=7, lk=9, h=3, d=4):
    ks = jax.random.split(jax.random.key(batch), 6)
    q, k, v = (jax.random.normal(ks[i], (batch, n, h, d)).astype(dtype) for i, n in enumerate((lq, lk, lk)))
    bias = jax.random.normal(ks[3], (1, h, lq, lk))
    w = jax.random.normal(ks[4], (batch, lq, h, d))
    # padding: the last example has 3 padded keys and 2 padded queries (fully masked rows)
    valid_q = np.ones((batch, lq), bool)
    valid_k = np.ones((batch, lk), bool)
    valid_q[-1, -2:] = False
    valid_k[-1, -3:] = False
    seg_q, seg_k = valid_q.astype(np.int32), valid_k.astype(np.int32)
    mask = layers.attention_mask(jnp.asarray(seg_q), jnp.asarray(seg_k), key_valid=jnp.asarray(valid_k))
    return q, k, v, bias, mask, w, ks[5]


@pytest.mark.parametrize("batch", [1, 2, 3, 8])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_attention_core_gradient_equals_autodiff(batch, dropout):
    """models/attention.py's hand-written attention gradient (softmax backward arranged for XLA:CPU,
    the bias gradient's batch sum as slice additions) against JAX's autodiff of the same forward
    formula: value, and the gradients of q, k, v and the shared bias, with padding (fully masked
    query rows, whose gradient must be zero) and with attention dropout."""
    q, k, v, bias, mask, w, key = _case(batch, jnp.float32)
    keep = attention.dropout_keep(key, dropout, (batch, 3, 7, 9)) if dropout else None

    def loss(f):
        return lambda q, k, v, b: jnp.sum(jnp.tanh(f(q, k, v, b, mask, keep, dropout)) * w)

    np.testing.assert_array_equal(attention._attention_core(q, k, v, bias, mask, keep, dropout),
                                  _plain_attention(q, k, v, bias, mask, keep, dropout))
    got = jax.jit(jax.grad(loss(attention._attention_core), (0, 1, 2, 3)))(q, k, v, bias)
    want = jax.jit(jax.grad(loss(_plain_attention), (0, 1, 2, 3)))(q, k, v, bias)
    for g, r in zip(got, want):
        assert g.shape == r.shape and float(jnp.max(jnp.abs(r))) > 1e-3
        np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-6)
    # padded queries get no gradient; the bias gradient is the batch sum of the scores' gradient
    np.testing.assert_array_equal(np.asarray(got[0])[-1, -2:], 0.0)
    d_scores = jax.grad(lambda s: jnp.sum(jnp.tanh(jnp.einsum(
        "bhqt,bthk->bqhk", attention.apply_keep(jax.nn.softmax(jnp.where(mask, s, attention.BIG_NEG), -1), keep,
                                                dropout), v)) * w))(
        jnp.einsum("bqhk,bthk->bhqt", q, k) + bias)
    np.testing.assert_allclose(got[3], np.sum(np.asarray(d_scores), axis=0, keepdims=True), rtol=2e-5, atol=2e-6)


def test_attention_core_gradient_bfloat16():
    """bfloat16 compute (float32 softmax): the hand-written gradient within bfloat16 rounding of autodiff's."""
    q, k, v, bias, mask, w, _ = _case(2, jnp.bfloat16)

    def loss(f):
        return lambda q, k, v, b: jnp.sum(f(q, k, v, b, mask, None, 0.0).astype(jnp.float32) * w)

    got = jax.grad(loss(attention._attention_core), (0, 1, 2, 3))(q, k, v, bias)
    want = jax.grad(loss(_plain_attention), (0, 1, 2, 3))(q, k, v, bias)
    for g, r in zip(got, want):
        assert g.dtype == r.dtype
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r, np.float32), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_bias_one_hot_equals_gather(bidirectional, monkeypatch):
    rpb = layers.RelativePositionBias(32, 128, 3, 16, bidirectional=bidirectional, param_dtype=jnp.float32,
                                      rngs=nnx.Rngs(0))
    q, k = jnp.arange(40), jnp.arange(40)
    w = jax.random.normal(jax.random.key(3), (1, 3, 40, 40))

    graphdef, state = nnx.split(rpb)

    def run():
        def f(state):
            bias = nnx.merge(graphdef, state)(q, k)
            return jnp.sum(bias * w), bias
        (_, value), grad = jax.value_and_grad(f, has_aux=True)(state)
        return value, jax.tree.leaves(grad)[0]

    one_hot_value, one_hot_grad = run()
    monkeypatch.setattr(layers, "ONE_HOT_MAX", 0)          # force the gather
    gather_value, gather_grad = run()
    np.testing.assert_array_equal(one_hot_value, gather_value)
    np.testing.assert_allclose(one_hot_grad, gather_grad, rtol=1e-5, atol=1e-6)
    # and against numpy: each bias entry is the table row of its bucket
    bucket = np.asarray(layers.relative_position_bucket(k[None, :] - q[:, None], bidirectional, 32, 128))
    np.testing.assert_array_equal(np.asarray(gather_value)[0], np.asarray(rpb.embedding[...])[bucket].transpose(2, 0, 1))
