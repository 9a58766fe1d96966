"""Attention masks: packing (segment ids + restarting positions), the prefix-LM
mask, and dropout with explicit keys."""

import jax
import numpy as np
import pytest
from flax import nnx

from t5x_lite.models import ModelConfig, build_model, classification_logits, model_logits
from t5x_lite.models.layers import dropout, dropout_keep

TINY = dict(vocab_size=61, d_model=32, num_heads=4, d_kv=8, d_ff=48, num_encoder_layers=2, num_decoder_layers=2)


def _shift_right(t):
    return np.concatenate([[0], t[:-1]]).astype(np.int32)


def _pack(rows, length):
    """Pack 1-D int arrays into one row: tokens, segment ids (1, 2, ..), positions."""
    tok, seg, pos = np.zeros((1, length), np.int32), np.zeros((1, length), np.int32), np.zeros((1, length), np.int32)
    at = 0
    for i, r in enumerate(rows):
        tok[0, at:at + len(r)] = r
        seg[0, at:at + len(r)] = i + 1
        pos[0, at:at + len(r)] = np.arange(len(r))
        at += len(r)
    return tok, seg, pos


@pytest.mark.parametrize("position_embedding", ["relative", "learned"])
@pytest.mark.slow
def test_packed_encoder_decoder_equals_separate(position_embedding):
    cfg = ModelConfig(architecture="encoder_decoder", position_embedding=position_embedding, **TINY)
    model = build_model(cfg, nnx.Rngs(0))
    rng = np.random.RandomState(0)
    enc = [rng.randint(2, 61, n).astype(np.int32) for n in (6, 4)]
    tgt = [rng.randint(2, 61, n).astype(np.int32) for n in (5, 3)]
    dec_in = [_shift_right(t) for t in tgt]                   # BOS reset at each packed segment start
    e_tok, e_seg, e_pos = _pack(enc, 12)
    d_tok, d_seg, d_pos = _pack(dec_in, 10)
    packed = np.asarray(model_logits(model, {
        "encoder_input_tokens": e_tok, "encoder_segment_ids": e_seg, "encoder_positions": e_pos,
        "decoder_input_tokens": d_tok, "decoder_segment_ids": d_seg, "decoder_positions": d_pos}))
    at = 0
    for e, d in zip(enc, dec_in):
        alone = np.asarray(model_logits(model, {"encoder_input_tokens": e[None], "decoder_input_tokens": d[None]}))
        np.testing.assert_allclose(packed[0, at:at + len(d)], alone[0], atol=1e-5, rtol=0)
        at += len(d)


def _assert_packed_equals_separate(model, stack, rows, length):
    """One packed row of `rows` gives, position by position, each row's logits alone."""
    tok, seg, pos = _pack(rows, length)
    packed = np.asarray(model_logits(model, {f"{stack}_input_tokens": tok, f"{stack}_segment_ids": seg,
                                             f"{stack}_positions": pos}))
    at = 0
    for r in rows:
        alone = np.asarray(model_logits(model, {f"{stack}_input_tokens": r[None]}))
        np.testing.assert_allclose(packed[0, at:at + len(r)], alone[0], atol=1e-5, rtol=0)
        at += len(r)


@pytest.mark.parametrize("position_embedding", ["relative", "sinusoidal"])
@pytest.mark.slow
def test_packed_decoder_only_equals_separate(position_embedding):
    cfg = ModelConfig(architecture="decoder_only", position_embedding=position_embedding, **TINY)
    model = build_model(cfg, nnx.Rngs(1))
    rng = np.random.RandomState(1)
    seqs = [_shift_right(rng.randint(2, 61, n)) for n in (7, 5)]
    _assert_packed_equals_separate(model, "decoder", seqs, 14)


def test_packed_encoder_only_equals_separate():
    cfg = ModelConfig(architecture="encoder_only", **TINY)
    model = build_model(cfg, nnx.Rngs(2))
    rng = np.random.RandomState(2)
    rows = [rng.randint(2, 61, n).astype(np.int32) for n in (5, 6)]
    _assert_packed_equals_separate(model, "encoder", rows, 12)


def test_prefix_mask_visibility():
    """Changing a later *input* token changes earlier prefix positions only for the
    prefix LM; a token after the prefix never changes earlier outputs."""
    rng = np.random.RandomState(3)
    tok = rng.randint(2, 61, (1, 10)).astype(np.int32)
    tok[0, 0] = 0                                           # BOS
    dca = (np.arange(10) <= 4).astype(np.int32)[None]       # BOS + 4 input tokens fully visible
    changed_input = tok.copy()
    changed_input[0, 4] = (tok[0, 4] + 7) % 59 + 2
    changed_target = tok.copy()
    changed_target[0, 7] = (tok[0, 7] + 7) % 59 + 2
    diffs = {}
    for mask in ("causal", "prefix"):
        model = build_model(ModelConfig(architecture="decoder_only", decoder_mask=mask, **TINY), nnx.Rngs(3))
        run = lambda t: np.asarray(model_logits(model, {"decoder_input_tokens": t, "decoder_causal_attention": dca}))
        base = run(tok)
        diffs[mask] = (np.abs(run(changed_input) - base).max(axis=-1)[0], np.abs(run(changed_target) - base).max(axis=-1)[0])
    d_in, d_tgt = diffs["prefix"]
    assert np.all(d_in[:4] > 1e-4), d_in                    # earlier prefix positions see position 4
    assert np.all(d_tgt[:7] == 0) and d_tgt[7] > 1e-4       # causal after the prefix
    c_in, c_tgt = diffs["causal"]
    assert np.all(c_in[:4] == 0) and c_in[4] > 1e-4         # causal LM: never looks ahead
    assert np.all(c_tgt[:7] == 0)


@pytest.mark.slow
def test_dropout_uses_explicit_key():
    cfg = ModelConfig(architecture="decoder_only", dropout_rate=0.3, **TINY)
    model = build_model(cfg, nnx.Rngs(4))
    rng = np.random.RandomState(4)
    batch = {"decoder_input_tokens": rng.randint(2, 61, (2, 5)).astype(np.int32)}
    k1, k2 = jax.random.key(1), jax.random.key(2)
    f = nnx.jit(model_logits, static_argnames="deterministic")
    det = np.asarray(f(model, batch, deterministic=True))
    np.testing.assert_array_equal(np.asarray(f(model, batch, deterministic=True, dropout_rng=k1)), det)
    a = np.asarray(f(model, batch, deterministic=False, dropout_rng=k1))
    np.testing.assert_array_equal(np.asarray(f(model, batch, deterministic=False, dropout_rng=k1)), a)
    b = np.asarray(f(model, batch, deterministic=False, dropout_rng=k2))
    assert np.abs(a - b).max() > 1e-3 and np.abs(a - det).max() > 1e-3
    with pytest.raises(ValueError, match="dropout_rng"):
        model_logits(model, batch, deterministic=False)


def test_dropout_keep_rate():
    keep = np.asarray(dropout_keep(jax.random.key(0), 0.3, (4, 8, 16, 16)))
    assert keep.shape == (4, 8, 16, 16) and abs(keep.mean() - 0.7) < 0.02
    x = np.ones((64, 64), np.float32)
    y = np.asarray(dropout(x, 0.25, jax.random.key(1), False))
    assert set(np.unique(y).tolist()) <= {0.0, float(np.float32(1.0) / np.float32(0.75))}
    assert abs(y.mean() - 1.0) < 0.05


def test_classification_head_pools_first_example_only():
    cfg = ModelConfig(architecture="encoder_only", num_classes=3, **TINY)
    model = build_model(cfg, nnx.Rngs(5))
    rng = np.random.RandomState(5)
    row = rng.randint(2, 61, 6).astype(np.int32)
    alone = np.asarray(classification_logits(model, {"encoder_input_tokens": np.pad(row, (0, 4))[None]}))
    tok, seg, pos = _pack([row, rng.randint(2, 61, 4).astype(np.int32)], 10)
    packed = np.asarray(classification_logits(model, {"encoder_input_tokens": tok, "encoder_segment_ids": seg,
                                                      "encoder_positions": pos}))
    assert alone.shape == (1, 3)
    np.testing.assert_allclose(packed, alone, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_bfloat16_compute_close_to_float32():
    """dtype=bfloat16 computes in bf16 (params stay float32) and returns float32
    logits close to the float32 model's; learned positions reject long inputs."""
    cfg = ModelConfig(architecture="decoder_only", position_embedding="learned", max_position_embeddings=16, **TINY)
    f32 = build_model(cfg, nnx.Rngs(6))
    bf16 = build_model(ModelConfig(**{**cfg.to_dict(), "dtype": "bfloat16"}), nnx.Rngs(6))
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    tok = np.random.RandomState(6).randint(2, 61, (2, 9)).astype(np.int32)
    a = np.asarray(model_logits(f32, {"decoder_input_tokens": tok}))
    b = model_logits(bf16, {"decoder_input_tokens": tok})
    assert b.dtype == np.float32
    b = np.asarray(b)
    assert 0 < np.abs(a - b).max() < 0.1 * np.abs(a).max()
    from t5x_lite.errors import UserError
    with pytest.raises(UserError, match="max_position_embeddings"):
        model_logits(f32, {"decoder_input_tokens": np.ones((1, 17), np.int32)})
