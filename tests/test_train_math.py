"""Schedules, Adafactor, losses and gradient accumulation against hand computations."""

import math
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from t5x_lite.errors import UserError
from t5x_lite.train import losses, optimizers


# ---------------------------------------------------------------- schedules

def test_rsqrt_is_constant_0_01_for_10k_steps_then_inverse_sqrt():
    sched = optimizers.make_schedule({"schedule": "rsqrt", "learning_rate": 1.0, "warmup_steps": 10_000}, 100_000)
    for step in (0, 1, 5000, 9999, 10_000):
        assert float(sched(step)) == pytest.approx(0.01, rel=1e-6)
    for step in (10_001, 40_000, 90_000):
        assert float(sched(step)) == pytest.approx(1 / math.sqrt(step), rel=1e-6)


def test_linear_cosine_constant_schedules():
    cfg = {"learning_rate": 1e-3, "warmup_steps": 10, "end_learning_rate": 0.0}
    lin = optimizers.make_schedule({**cfg, "schedule": "linear"}, 110)
    cos = optimizers.make_schedule({**cfg, "schedule": "cosine"}, 110)
    const = optimizers.make_schedule({"schedule": "constant", "learning_rate": 1e-3}, 110)
    # warm-up: (step + 1) / warmup of the peak, for both
    assert float(lin(0)) == pytest.approx(1e-4) and float(cos(4)) == pytest.approx(5e-4)
    assert float(lin(10)) == pytest.approx(1e-3) and float(cos(10)) == pytest.approx(1e-3)
    # halfway through the decay: linear halves; cosine is at (1 + cos(pi/2)) / 2 = 0.5 too, then below linear
    assert float(lin(60)) == pytest.approx(5e-4, rel=1e-5)
    assert float(cos(60)) == pytest.approx(5e-4, rel=1e-5)
    assert float(cos(85)) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.75)), rel=1e-5)
    assert float(lin(110)) == pytest.approx(0.0, abs=1e-12)
    assert float(const(0)) == float(const(99)) == pytest.approx(1e-3)


def test_bad_optimizer_settings_are_user_errors():
    with pytest.raises(UserError):
        optimizers.make_schedule({"schedule": "exponential", "learning_rate": 1.0}, 10)
    with pytest.raises(UserError):
        optimizers.make_optimizer({"name": "sgd", "schedule": "constant", "learning_rate": 1.0}, 10)


# ---------------------------------------------------------------- Adafactor (T5 defaults)

def _adafactor_reference(w, grads, lr):
    """T5 Adafactor (Shazeer & Stern 2018, T5X defaults), numpy, for a 2-D param >= 128 wide:
    factored second moments with beta2_t = 1 - t^-0.8, update clipping at RMS 1.0, no momentum,
    step size lr * max(1e-3, RMS(w))."""
    vr = np.zeros(w.shape[0])
    vc = np.zeros(w.shape[1])
    for t, g in enumerate(grads, start=1):
        beta2 = 1.0 - t ** -0.8
        g2 = g * g + 1e-30
        vr = beta2 * vr + (1 - beta2) * g2.mean(axis=1)
        vc = beta2 * vc + (1 - beta2) * g2.mean(axis=0)
        v = np.outer(vr / vr.mean(), vc)
        u = g / np.sqrt(v)
        u = u / max(1.0, np.sqrt(np.mean(u * u)) / 1.0)
        scale = max(1e-3, np.sqrt(np.mean(w * w)))
        w = w - lr * scale * u
    return w


def test_adafactor_matches_t5_reference():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(128, 160)).astype(np.float64)
    grads = [rng.normal(size=w0.shape) * (i + 1) for i in range(3)]
    tx, _ = optimizers.make_optimizer({"name": "adafactor", "schedule": "constant", "learning_rate": 0.01}, 10)
    params = {"w": jnp.asarray(w0, jnp.float32)}
    state = tx.init(params)
    # factored: row/col vectors, no full second moment
    leaves = {jax.tree_util.keystr(p): l.shape for p, l in jax.tree_util.tree_flatten_with_path(state)[0]}
    assert any(s == (128,) for s in leaves.values()) and any(s == (160,) for s in leaves.values())
    assert not any(s == (128, 160) for s in leaves.values())  # no momentum, nothing full-size
    for g in grads:
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
    want = _adafactor_reference(w0, grads, 0.01)
    np.testing.assert_allclose(np.asarray(params["w"]), want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("settings", [{}, {"momentum": 0.9, "weight_decay": 0.01, "decay_rate": 0.5},
                                      {"factored": False, "clipping_threshold": 0.0}])
def test_adafactor_equals_optax_adafactor(settings):
    """make_optimizer's Adafactor chain (its own one-pass parameter scale) against optax.adafactor
    with the same settings: the same state tree (checkpoints stay compatible) and the same updates
    over 4 steps, for a matrix wider than 128 (factored), a vector, and an all-zero matrix (RMS
    below the 1e-3 floor)."""
    cfg = {"name": "adafactor", "schedule": "constant", "learning_rate": 0.01, **settings}
    o = optimizers._settings(cfg)
    ours, schedule = optimizers.make_optimizer(cfg, 10)
    ref = optax.adafactor(learning_rate=schedule, min_dim_size_to_factor=int(o["min_dim_size_to_factor"]),
                          decay_rate=float(o["decay_rate"]), multiply_by_parameter_scale=True,
                          clipping_threshold=float(o["clipping_threshold"]) or None,
                          momentum=float(o["momentum"]) or None, weight_decay_rate=float(o["weight_decay"]) or None,
                          eps=float(o["adafactor_epsilon"]), factored=bool(o["factored"]))
    rng = np.random.default_rng(1)
    params = {"emb": jnp.asarray(rng.normal(size=(200, 130)), jnp.float32),
              "scale": jnp.asarray(rng.normal(size=(130,)), jnp.float32), "zero": jnp.zeros((4, 5))}
    s_ours, s_ref = ours.init(params), ref.init(params)
    assert jax.tree.structure(s_ours) == jax.tree.structure(s_ref)
    p_ours = p_ref = params
    for step in range(4):
        g = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * (step + 1), jnp.float32), params)
        u_ours, s_ours = jax.jit(ours.update)(g, s_ours, p_ours)
        u_ref, s_ref = jax.jit(ref.update)(g, s_ref, p_ref)
        for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_ref)):
            assert float(jnp.max(jnp.abs(b))) > 0
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)
        p_ours, p_ref = optax.apply_updates(p_ours, u_ours), optax.apply_updates(p_ref, u_ref)


def test_grad_clip_clips_the_global_norm_before_the_optimizer():
    cfg = {"name": "adamw", "schedule": "constant", "learning_rate": 1.0, "epsilon": 1e3}
    clipped, _ = optimizers.make_optimizer(cfg, 10, grad_clip=1.0)
    plain, _ = optimizers.make_optimizer(cfg, 10, grad_clip=0.0)
    p = {"w": jnp.zeros((3,)), "b": jnp.zeros((2,))}
    g = {"w": jnp.array([30.0, 0.0, 0.0]), "b": jnp.array([40.0, 0.0])}          # global norm 50
    u_clip, _ = clipped.update(g, clipped.init(p), p)
    u_ref, _ = plain.update(jax.tree.map(lambda x: x / 50.0, g), plain.init(p), p)  # norm 1
    u_raw, _ = plain.update(g, plain.init(p), p)
    np.testing.assert_allclose(np.asarray(u_clip["w"]), np.asarray(u_ref["w"]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(u_clip["b"]), np.asarray(u_ref["b"]), rtol=1e-6)
    assert abs(float(u_raw["w"][0])) > 10 * abs(float(u_clip["w"][0]))  # eps=1e3 makes Adam ~linear in g


# ---------------------------------------------------------------- losses

def _np_losses(logits, targets, z, ls):
    logits = np.asarray(logits, np.float64)
    v = logits.shape[-1]
    log_z = np.log(np.exp(logits).sum(-1))
    logp = logits - log_z[..., None]
    soft = np.full(logits.shape, ls / (v - 1))
    np.put_along_axis(soft, targets[..., None], 1 - ls, axis=-1)
    ent = -(soft * np.log(np.where(soft > 0, soft, 1))).sum(-1)  # entropy of the soft targets
    ce = -(soft * logp).sum(-1) - ent
    return ce + z * log_z ** 2, z * log_z ** 2


@pytest.mark.parametrize("z,ls", [(0.0, 0.0), (1e-4, 0.0), (1e-4, 0.1), (0.5, 0.3)])
def test_token_losses_match_hand_computation(z, ls):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 11)) * 3
    targets = rng.integers(0, 11, size=(2, 5))
    total, zl, correct = losses.token_losses(jnp.asarray(logits, jnp.float32), jnp.asarray(targets),
                                             z_loss=z, label_smoothing=ls)
    want_total, want_z = _np_losses(logits, targets, z, ls)
    np.testing.assert_allclose(np.asarray(total), want_total, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(zl), want_z, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(correct), (logits.argmax(-1) == targets).astype(np.float32))


def test_label_smoothing_loss_is_zero_at_the_smoothed_optimum():
    v, ls = 7, 0.2
    probs = np.full(v, ls / (v - 1))
    probs[3] = 1 - ls
    logits = jnp.asarray(np.log(probs)[None, None, :], jnp.float32)
    total, _, _ = losses.token_losses(logits, jnp.array([[3]]), z_loss=0.0, label_smoothing=ls)
    assert abs(float(total[0, 0])) < 1e-5


def test_weighted_sums_ignore_padding():
    logits = jnp.zeros((1, 4, 5))
    out = losses.weighted_sums(logits, jnp.array([[1, 2, 0, 0]]), jnp.array([[1.0, 1.0, 0.0, 0.0]]), z_loss=0.0)
    assert float(out["weight_sum"]) == 2.0
    assert float(out["loss_sum"]) == pytest.approx(2 * math.log(5), rel=1e-6)


# ---------------------------------------------------------------- MFU

def test_peak_table_and_mfu():
    from t5x_lite.train import metrics
    assert metrics.peak_flops_per_device("NVIDIA H100 80GB HBM3") == 989e12
    assert metrics.peak_flops_per_device("NVIDIA H200") == 989e12
    assert metrics.peak_flops_per_device("NVIDIA A100-SXM4-80GB") == 312e12
    assert metrics.peak_flops_per_device("TPU v4") == 275e12
    assert metrics.peak_flops_per_device("TPU v5 lite") == 197e12
    assert metrics.peak_flops_per_device("TPU v5p") == 459e12
    assert metrics.peak_flops_per_device("TPU v6 lite") == 918e12
    assert metrics.peak_flops_per_device("some new chip") is None
    # no CPU peak is assumed: the trainer's mfu is null on CPU (tools/bench_train.py measures one)
    assert metrics.peak_flops_per_device("cpu", "float32") is None
    assert jax.devices()[0].platform == "cpu" and metrics.mfu(55e9, 1.0, "float32") is None
    # on an accelerator: model FLOP/s over (datasheet peak x devices)
    with mock.patch.object(metrics, "device_peak", lambda dtype: 100e12):
        assert metrics.mfu(0.5 * 100e12 * jax.device_count(), 1.0) == pytest.approx(0.5)


def test_flops_per_step_uses_the_models_count():
    from t5x_lite.models import flops_per_step
    from t5x_lite.models.config import ModelConfig
    from t5x_lite.train import metrics
    cfg = ModelConfig(vocab_size=256, d_model=64, num_heads=2, d_kv=16, d_ff=128, num_encoder_layers=1,
                      num_decoder_layers=1)
    assert metrics.model_flops_per_step(cfg, 8, {"inputs": 32, "targets": 8}) == flops_per_step(cfg, 8, 32, 8)
