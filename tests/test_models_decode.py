"""Incremental (KV-cache) decoding equals the full teacher-forced forward pass
(float32, atol 1e-5): encoder-decoder, causal decoder-only LM, and prefix LM
with prompts of different per-example lengths (scanned layers)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from t5x_lite.models import ModelConfig, build_model, decode_step, init_decode_state, model_logits

TINY = dict(vocab_size=61, d_model=32, num_heads=4, d_kv=8, d_ff=48, num_encoder_layers=2, num_decoder_layers=2)
B, LT = 3, 9


@pytest.fixture(scope="module")
def jitted():
    init = nnx.jit(init_decode_state, static_argnums=2)
    step = nnx.jit(decode_step)
    return init, step


def _shift_right(t):
    return np.concatenate([np.zeros((t.shape[0], 1), np.int32), t[:, :-1]], axis=1)


@pytest.mark.slow
def test_encoder_decoder_cache_matches_full_forward(jitted):
    init, step = jitted
    cfg = ModelConfig(architecture="encoder_decoder", **TINY)
    model = build_model(cfg, nnx.Rngs(0))
    rng = np.random.RandomState(0)
    enc = rng.randint(2, 61, (B, 11)).astype(np.int32)
    enc[1, 6:] = 0   # padded encoder inputs must be ignored the same way in both paths
    enc[2, 2:] = 0
    tgt = rng.randint(2, 61, (B, LT)).astype(np.int32)
    full = np.asarray(model_logits(model, {"encoder_input_tokens": enc, "decoder_input_tokens": _shift_right(tgt)}))
    logits, state = init(model, {"encoder_input_tokens": enc}, LT)
    assert all(leaf.shape[0] == B for leaf in __import__("jax").tree.leaves(state))
    assert [a.shape for a in state["cross_k"]] == [(B, cfg.num_heads, 11, cfg.d_kv)] * cfg.num_decoder_layers
    got = [np.asarray(logits)]
    for t in range(LT - 1):
        logits, state = step(model, state, jnp.asarray(tgt[:, t]))
        got.append(np.asarray(logits))
    np.testing.assert_allclose(np.stack(got, 1), full, atol=1e-5, rtol=0)
    assert np.asarray(state["index"]).tolist() == [LT] * B


@pytest.mark.parametrize("mask,scan", [("causal", False), ("prefix", True)])
@pytest.mark.slow
def test_decoder_only_cache_matches_full_forward(jitted, mask, scan):
    init, step = jitted
    cfg = ModelConfig(architecture="decoder_only", decoder_mask=mask, scan_layers=scan, **TINY)
    model = build_model(cfg, nnx.Rngs(1))
    rng = np.random.RandomState(1)
    lengths = np.array([0, 2, 5], np.int32)       # per-example prompt lengths (0 = unconditional)
    total = 12
    seq = rng.randint(2, 61, (B, total)).astype(np.int32)   # prompt tokens followed by continuation
    dit = _shift_right(seq)                                 # [0, s_1, ..., s_{T-1}]
    # seqio PrefixLM: decoder_causal_attention covers BOS + the inputs (positions 0..len).
    dca = (np.arange(total)[None, :] <= lengths[:, None]).astype(np.int32)
    full = np.asarray(model_logits(model, {"decoder_input_tokens": dit, "decoder_causal_attention": dca}))
    p = 6                                                   # padded prompt width (> every length)
    prompt = np.zeros((B, p), np.int32)
    for b in range(B):
        prompt[b, :lengths[b]] = seq[b, :lengths[b]]
        prompt[b, lengths[b]:] = 0
    n_new = 5
    logits, state = init(model, {"decoder_prompt_tokens": prompt, "prompt_lengths": lengths}, n_new)
    rows = np.arange(B)
    # logits at decoder position len_b predict seq[len_b], the first new token
    np.testing.assert_allclose(np.asarray(logits), full[rows, lengths], atol=1e-5, rtol=0)
    for s in range(n_new - 1):
        logits, state = step(model, state, jnp.asarray(seq[rows, lengths + s]))
        np.testing.assert_allclose(np.asarray(logits), full[rows, lengths + s + 1], atol=1e-5, rtol=0)
    assert [a.shape for a in state["cache_k"]] == [(B, p + n_new, 4, 8)] * 2   # one [B, Lc, H, K] per layer


def test_prefix_lm_prompt_is_fully_visible():
    """Sanity check that the prefix-LM prompt really is bidirectional: changing the
    last prompt token changes the cached keys of earlier prompt positions."""
    cfg = ModelConfig(architecture="decoder_only", decoder_mask="prefix", **TINY)
    model = build_model(cfg, nnx.Rngs(2))
    prompt = np.array([[5, 6, 7, 8]], np.int32)
    _, s1 = init_decode_state(model, {"decoder_prompt_tokens": prompt, "prompt_lengths": np.array([4])}, 2)
    prompt2 = prompt.copy()
    prompt2[0, 3] = 9
    _, s2 = init_decode_state(model, {"decoder_prompt_tokens": prompt2, "prompt_lengths": np.array([4])}, 2)
    # layer 1 keys at position 1 depend on layer-0 outputs, which see the whole prompt
    assert np.abs(np.asarray(s1["cache_k"][1][0, 1]) - np.asarray(s2["cache_k"][1][0, 1])).max() > 1e-4
