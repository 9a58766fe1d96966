"""dot_product_attention in both key/value layouts ([B, Lk, H, K] for training, [B, H, Lk, K] for the
decode cache's encoder side, computed over one merged B*H batch axis) against a numpy attention."""

import numpy as np
import pytest

from t5x_lite.models.attention import dot_product_attention


def numpy_attention(q, k, v, bias, mask):
    """q [B, Lq, H, K], k/v [B, Lk, H, K], bias [1|B, H, Lq, Lk], mask [B, 1, Lq, Lk] -> [B, Lq, H, K]."""
    scores = np.einsum("bqhk,bthk->bhqt", q.astype(np.float64), k.astype(np.float64))
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = np.where(mask, scores, -1e10)
    scores -= scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhqt,bthk->bqhk", probs, v.astype(np.float64))


@pytest.mark.parametrize("lq", [1, 4])          # greedy (one query) and 4 beams as 4 query positions
@pytest.mark.parametrize("with_bias", [False, True])
def test_both_kv_layouts_equal_numpy(lq, with_bias):
    rng = np.random.default_rng(lq + 10 * with_bias)
    b, lk, h, d = 3, 7, 2, 5
    q = rng.standard_normal((b, lq, h, d)).astype(np.float32)
    k = rng.standard_normal((b, lk, h, d)).astype(np.float32)
    v = rng.standard_normal((b, lk, h, d)).astype(np.float32)
    bias = rng.standard_normal((1, h, lq, lk)).astype(np.float32) if with_bias else None
    mask = np.ones((b, 1, lq, lk), bool)
    mask[0, :, :, 5:] = False                     # padding at the end of example 0's keys
    mask[2, :, :, :2] = False
    want = numpy_attention(q, k, v, bias, mask)
    got = np.asarray(dot_product_attention(q, k, v, bias, mask))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    heads_first = np.asarray(dot_product_attention(q, np.swapaxes(k, 1, 2), np.swapaxes(v, 1, 2), bias, mask,
                                                   kv_heads_first=True))
    np.testing.assert_allclose(heads_first, want, rtol=1e-5, atol=1e-5)
    # the masked keys take no part: changing their values changes nothing
    v2 = v.copy()
    v2[0, 5:] += 100.0
    again = np.asarray(dot_product_attention(q, np.swapaxes(k, 1, 2), np.swapaxes(v2, 1, 2), bias, mask,
                                             kv_heads_first=True))
    np.testing.assert_allclose(again, heads_first, rtol=1e-6, atol=1e-6)
