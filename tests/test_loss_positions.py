"""The output layer only where the loss is taken (losses.loss_position_sums) gives the full
computation's sums and gradients, in every tier (L/4, L/2, all positions), for a bare output
layer and through whole decoder-only and encoder-only (MLM) models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from t5x_lite import models
from t5x_lite.train import losses, objectives

B, L, D, V = 3, 32, 8, 50


def _data(count_per_row, seed=0):
    rng = np.random.default_rng(seed)
    hidden = jnp.asarray(rng.normal(size=(B, L, D)), jnp.float32)
    targets = jnp.asarray(rng.integers(1, V, (B, L)), jnp.int32)
    w = np.zeros((B, L), np.float32)
    for r, n in enumerate(count_per_row):
        w[r, rng.choice(L, n, replace=False)] = rng.choice([0.5, 1.0, 2.0], n)
    kernel = jnp.asarray(rng.normal(size=(D, V)), jnp.float32)
    return hidden, targets, jnp.asarray(w), kernel


@pytest.mark.parametrize("counts,z_loss,smoothing", [((0, 3, 8), 1e-4, 0.0), ((9, 16, 2), 0.0, 0.1),
                                                    ((17, 30, 32), 1e-4, 0.1)],
                         ids=["tier_quarter", "tier_half_smoothed", "all_positions"])
def test_sums_and_gradients_equal_the_full_output_layer(counts, z_loss, smoothing):
    hidden, targets, weights, kernel = _data(counts)

    def full(h, k):
        return losses.weighted_sums(h @ k, targets, weights, z_loss=z_loss, label_smoothing=smoothing)

    def sparse(h, k):
        return losses.loss_position_sums(lambda x: x @ k, h, targets, weights, z_loss=z_loss,
                                         label_smoothing=smoothing)

    a, b = jax.jit(full)(hidden, kernel), jax.jit(sparse)(hidden, kernel)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-5, err_msg=key)
    ga = jax.grad(lambda h, k: full(h, k)["loss_sum"], argnums=(0, 1))(hidden, kernel)
    gb = jax.grad(lambda h, k: sparse(h, k)["loss_sum"], argnums=(0, 1))(hidden, kernel)
    for x, y in zip(ga, gb):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5)
    assert float(a["weight_sum"]) == pytest.approx(float(weights.sum()))


def test_the_compact_branch_runs_the_output_layer_on_fewer_rows():
    """The point of it: in the L/4 tier the output layer sees [B, 8, D], not [B, 32, D]."""
    hidden, targets, weights, kernel = _data((2, 5, 8))
    seen = []

    def head(x):
        seen.append(x.shape)
        return x @ kernel

    jax.make_jaxpr(lambda h: losses.loss_position_sums(head, h, targets, weights))(hidden)
    assert (B, 8, D) in seen and (B, 16, D) in seen and (B, L, D) in seen   # every branch traced once
    ops = [e.primitive.name for e in jax.make_jaxpr(
        lambda h: losses.loss_position_sums(head, h, targets, weights))(hidden).eqns]
    assert "cond" in ops   # lax.switch: one branch runs


@pytest.mark.parametrize("arch", ["decoder_only", "encoder_only"])
def test_whole_model_sums_equal_the_full_logits(arch):
    cfg = models.ModelConfig(architecture=arch, vocab_size=V, d_model=16, num_heads=2, d_kv=8, d_ff=32,
                             num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0).validate()
    rng = np.random.default_rng(1)
    prefix = "decoder" if arch == "decoder_only" else "encoder"
    tokens = rng.integers(2, V, (B, L)).astype(np.int32)
    w = np.zeros((B, L), np.float32)
    w[:, L - 6:] = 1.0                      # loss on the last 6 positions: the L/4 tier
    batch = {f"{prefix}_input_tokens": jnp.asarray(tokens), f"{prefix}_target_tokens": jnp.asarray(tokens),
             f"{prefix}_loss_weights": jnp.asarray(w)}
    model = models.build_model(cfg, nnx.Rngs(0))
    got = objectives.token_sums(model, batch, deterministic=True, dropout_rng=None, z_loss=1e-4,
                                label_smoothing=0.0, cfg=cfg)
    logits = models.model_logits(model, batch)
    want = losses.weighted_sums(logits, *models.targets_and_weights(cfg, batch), z_loss=1e-4)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5, err_msg=key)
