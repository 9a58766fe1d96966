"""The CPU-only rewrites in models/layers.py compute the same values and gradients as the plain
formulations they replace (they exist because XLA:CPU runs the plain ones slowly; see
docs/performance.md): the shared-bias add whose gradient sums the batch as slice additions, and
the relative position bias as a one-hot matmul instead of a gather."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from t5x_lite.models import layers


@pytest.mark.parametrize("batch", [1, 2, 3, 8])
def test_shared_bias_add_value_and_gradients(batch):
    scores = jax.random.normal(jax.random.key(0), (batch, 2, 4, 5))
    bias = jax.random.normal(jax.random.key(1), (1, 2, 4, 5))
    w = jax.random.normal(jax.random.key(2), (batch, 2, 4, 5))

    def loss(add):
        return lambda s, b: jnp.sum(jnp.tanh(add(s, b)) * w)

    np.testing.assert_array_equal(layers.add_shared_bias(scores, bias), scores + bias)
    got = jax.grad(loss(layers.add_shared_bias), (0, 1))(scores, bias)
    want = jax.grad(loss(jnp.add), (0, 1))(scores, bias)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6)
    # the bias gradient is the batch sum of the scores' gradient, checked independently in numpy
    np.testing.assert_allclose(got[1], np.sum(np.asarray(got[0]), axis=0, keepdims=True), rtol=1e-5, atol=1e-6)


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
