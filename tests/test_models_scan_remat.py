"""scan_layers and remat change how the model runs, never what it computes:
scanned == unscanned after converting the param tree, and every remat policy
gives the same loss and gradients (with dropout on too: per-layer dropout keys
are the same in both layouts and in the recomputed forward pass)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from t5x_lite.models import ModelConfig, build_model, model_logits, scan_params, unscan_params

pytestmark = pytest.mark.slow  # end-to-end / multi-device: the whole-suite tier

TINY = dict(vocab_size=61, d_model=32, num_heads=4, d_kv=8, d_ff=48, num_encoder_layers=2, num_decoder_layers=2)


def _batch(arch, rng):
    if arch == "encoder_only":
        return {"encoder_input_tokens": rng.randint(2, 61, (2, 7)).astype(np.int32)}
    b = {"decoder_input_tokens": rng.randint(2, 61, (2, 6)).astype(np.int32),
         "decoder_causal_attention": np.array([[1, 1, 1, 0, 0, 0]] * 2, np.int32)}
    if arch == "encoder_decoder":
        b["encoder_input_tokens"] = rng.randint(2, 61, (2, 7)).astype(np.int32)
    return b


def _with_params(cfg, params):
    """A model of cfg holding `params` (built from shapes only: no random init to compile)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0))))
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
    return nnx.merge(graphdef, state)


@pytest.mark.parametrize("arch,extra", [("encoder_decoder", {}),
                                        ("encoder_decoder", {"shared_encoder_decoder": True}),
                                        ("decoder_only", {"decoder_mask": "prefix"}), ("encoder_only", {})])
def test_scanned_equals_unscanned(arch, extra):
    cfg = ModelConfig(architecture=arch, **TINY, **extra)
    flat = build_model(cfg, nnx.Rngs(0))
    scan_cfg = ModelConfig(**{**cfg.to_dict(), "scan_layers": True})
    p_flat = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(flat, nnx.Param)))
    p_scan = scan_params(p_flat)
    stack = "decoder" if arch != "encoder_only" else "encoder"
    assert "layers" in p_scan[stack] and "layers_0" not in p_scan[stack]
    abstract = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: build_model(scan_cfg, nnx.Rngs(0))), nnx.Param))
    assert jax.tree.structure(p_scan) == jax.tree.structure(abstract)
    assert jax.tree.map(np.shape, p_scan) == jax.tree.map(lambda a: a.shape, abstract)
    scanned = _with_params(scan_cfg, p_scan)
    batch = _batch(arch, np.random.RandomState(0))
    a = np.asarray(model_logits(flat, batch))
    b = np.asarray(model_logits(scanned, batch))
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    back = unscan_params(jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(scanned, nnx.Param))))
    jax.tree.map(np.testing.assert_array_equal, back, p_flat)


def _loss_and_grads(model, batch, targets, key):
    def loss_fn(model):
        logits = model_logits(model, batch, deterministic=False, dropout_rng=key)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))
    loss, grads = nnx.jit(lambda m: nnx.value_and_grad(loss_fn)(m))(model)
    return float(loss), jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(grads, nnx.Param)))


@pytest.mark.parametrize("dropout_rate,runs", [
    (0.0, (("none", False), ("full", False), ("dots_saveable", False))),
    (0.1, (("none", False), ("full", True)))])
def test_remat_policies_same_loss_and_grads(dropout_rate, runs):
    """none / full / dots_saveable (unscanned), and with dropout on, full remat
    inside the scan (grads converted back to the unscanned layout, so the
    recomputed forward must redraw the very same dropout masks): identical loss
    and grads."""
    batch = _batch("decoder_only", np.random.RandomState(1))
    targets = jnp.asarray(np.random.RandomState(2).randint(2, 61, (2, 6)), jnp.int32)
    key = jax.random.key(7)
    results = {}
    params = None
    for policy, scan in runs:
        cfg = ModelConfig(architecture="decoder_only", decoder_mask="prefix", dropout_rate=dropout_rate,
                          remat_policy=policy, scan_layers=scan, **TINY)
        if params is None:
            params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(build_model(cfg, nnx.Rngs(0)), nnx.Param)))
        model = _with_params(cfg, scan_params(params) if scan else params)
        loss, grads = _loss_and_grads(model, batch, targets, key)
        results[(policy, scan)] = (loss, unscan_params(grads) if scan else grads)
    ref_loss, ref_grads = results[("none", False)]
    assert np.isfinite(ref_loss)
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(ref_grads)) > 0
    for k, (loss, grads) in results.items():
        assert abs(loss - ref_loss) < 1e-6, k
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), grads, ref_grads)
