"""Pre-training objectives: statistics over many examples, exact T5 lengths, and property-based round trips.

Round-trip property: real data never contains sentinel ids (the vocabulary cannot produce ids >=
vocab_size - extra_ids), so sequences are drawn from [UNK=2, first_sentinel) INCLUDING the highest
non-sentinel id; on those, every denoising objective must let us rebuild the original sequence from
(inputs, targets), or (BERT/MASS/deshuffle/LM) have the original as the target.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from t5x_lite.data import get_vocabulary
from t5x_lite.data import preprocessors as pp
from t5x_lite.data.preprocessors import Context, Feature

BYTE = get_vocabulary("byte")          # 259 base ids + 100 sentinels
BUILTIN = get_vocabulary("builtin")    # 8000 pieces + 100 sentinels


def ctx_for(vocab, index=0, seed=0, lengths=None):
    feats = {"inputs": Feature(vocab), "targets": Feature(vocab)}
    return Context(seed, 1, index, lengths or {}, feats)


def rebuild_from_sentinels(inputs, targets, first_sentinel):
    """Independent inverse of the unique-sentinel encoding: noise spans are the non-empty runs of target
    tokens between sentinels, in order; each input sentinel stands for the next noise span."""
    spans, current = [], []
    for t in targets:
        if t >= first_sentinel:
            if current:
                spans.append(current)
            current = []
        else:
            current.append(int(t))
    if current:
        spans.append(current)
    out, k = [], 0
    for t in inputs:
        if t >= first_sentinel:
            out.extend(spans[k])
            k += 1
        else:
            out.append(int(t))
    assert k == len(spans), "every noise span must be referenced by one input sentinel"
    return out


def sentinels(x, vocab):
    return [int(t) for t in x if t >= vocab.first_sentinel_id]


# ------------------------------------------------------------------------------------------------
# Exact T5 lengths and sentinel order
# ------------------------------------------------------------------------------------------------
def test_random_spans_helper_matches_t5_table():
    assert pp.random_spans_helper(512) == (568, 114)
    assert pp.random_spans_helper(568) == (630, 126)
    assert pp.random_spans_helper(626) == (694, 140)


def test_span_corruption_512_114_exact_lengths_and_sentinels():
    lengths = {"inputs": 512, "targets": 114}
    fn = pp.span_corruption()
    rng = np.random.default_rng(0)
    for i in range(50):
        tokens = rng.integers(3, BUILTIN.first_sentinel_id, 568).astype(np.int32)
        ctx = ctx_for(BUILTIN, index=i, lengths=lengths)
        ex = pp.append_eos_after_trim(fn({"targets": tokens}, ctx), ctx)
        assert len(ex["inputs"]) == 512 and len(ex["targets"]) == 114
        assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1
        s_in, s_tg = sentinels(ex["inputs"], BUILTIN), sentinels(ex["targets"], BUILTIN)
        assert s_in == list(range(BUILTIN.vocab_size - 1, BUILTIN.vocab_size - 1 - len(s_in), -1))  # strictly descending from the top
        assert s_in == s_tg                       # same sentinels, same order, in inputs and targets
        assert len(s_in) == 28
        assert ex["targets"][0] == BUILTIN.vocab_size - 1   # targets start with <extra_id_0>
        assert ex["inputs"][0] < BUILTIN.first_sentinel_id  # inputs start with non-noise
        assert rebuild_from_sentinels(ex["inputs"][:-1], ex["targets"][:-1], BUILTIN.first_sentinel_id) == tokens.tolist()


@pytest.mark.parametrize("mean_span", [2.0, 3.0, 5.0, 10.0])
def test_span_corruption_statistics(mean_span):
    """Noise density 0.15 +- 0.01 and mean span length within 10% of the setting, measured from the
    produced inputs/targets over many examples of varied length."""
    fn = pp.span_corruption(0.15, mean_span)
    rng = np.random.default_rng(1)
    noise = total = spans = 0
    span_lengths = []
    for i in range(400):
        n = int(rng.integers(100, 1200))
        tokens = rng.integers(3, BYTE.first_sentinel_id, n).astype(np.int32)
        ex = fn({"targets": tokens}, ctx_for(BYTE, index=i))
        s = sentinels(ex["targets"], BYTE)
        noise += len(ex["targets"]) - len(s)
        total += n
        spans += len(s)
        # individual span lengths (run lengths between target sentinels)
        runs = np.split(ex["targets"], np.flatnonzero(ex["targets"] >= BYTE.first_sentinel_id))
        span_lengths += [len(r) - 1 for r in runs if len(r) > 1]
    assert abs(noise / total - 0.15) < 0.01
    assert abs(noise / spans - mean_span) < 0.1 * mean_span
    assert abs(np.mean(span_lengths) - mean_span) < 0.1 * mean_span
    assert min(span_lengths) >= 1


def test_span_mask_is_random_and_alternates():
    rng = np.random.default_rng(0)
    masks = [pp.random_spans_noise_mask(100, 0.15, 3.0, rng) for _ in range(20)]
    assert len({m.tobytes() for m in masks}) == 20          # not a fixed pattern
    for m in masks:
        assert not m[0] and m[-1]                            # starts with non-noise, ends with noise
        assert m.sum() == 15


@pytest.mark.parametrize("rate", [0.10, 0.15, 0.25, 0.50])
def test_iid_denoising_rate(rate):
    fn = pp.iid_denoising(rate)
    rng = np.random.default_rng(2)
    noise = total = 0
    for i in range(300):
        tokens = rng.integers(3, BYTE.first_sentinel_id, 200).astype(np.int32)
        ex = fn({"targets": tokens}, ctx_for(BYTE, index=i))
        noise += len(ex["targets"]) - len(sentinels(ex["targets"], BYTE))
        total += 200
        # each run of consecutive dropped tokens is ONE sentinel in the inputs
        assert len(sentinels(ex["inputs"], BYTE)) == len(ex["inputs"]) - (200 - (len(ex["targets"]) - len(sentinels(ex["targets"], BYTE))))
    assert abs(noise / total - rate) < 0.01


def test_bert_style_proportions():
    fn = pp.bert_style()
    rng = np.random.default_rng(3)
    changed = masked = total = 0
    for i in range(300):
        tokens = rng.integers(3, BUILTIN.first_sentinel_id, 300).astype(np.int32)
        ex = fn({"targets": tokens}, ctx_for(BUILTIN, index=i))
        assert np.array_equal(ex["targets"], tokens)
        diff = ex["inputs"] != tokens
        changed += diff.sum()
        masked += (ex["inputs"] == BUILTIN.vocab_size - 1).sum()
        total += 300
    # 15% corrupted; 90% of them -> mask token; random replacements rarely equal the original (1/7997)
    assert abs(changed / total - 0.15) < 0.01
    assert abs(masked / changed - 0.9) < 0.02


def test_mlm_80_10_10():
    fn = pp.bert_mlm()
    rng = np.random.default_rng(4)
    chosen = masked = kept = 0
    for i in range(300):
        tokens = rng.integers(3, BUILTIN.first_sentinel_id, 300).astype(np.int32)
        ex = fn({"targets": tokens}, ctx_for(BUILTIN, index=i))
        w = ex["loss_weights"].astype(bool)
        chosen += w.sum()
        masked += (ex["inputs"][w] == BUILTIN.vocab_size - 1).sum()
        kept += (ex["inputs"][w] == tokens[w]).sum()
        assert np.array_equal(ex["inputs"][~w], tokens[~w])   # unchosen positions untouched
    assert abs(chosen / 90000 - 0.15) < 0.01
    assert abs(masked / chosen - 0.8) < 0.02
    assert abs(kept / chosen - 0.1) < 0.02


def test_prefix_lm_split_point_is_uniform():
    fn = pp.prefix_lm()
    fractions = []
    for i in range(500):
        tokens = np.arange(3, 103, dtype=np.int32)
        ex = fn({"targets": tokens}, ctx_for(BYTE, index=i))
        fractions.append(len(ex["inputs"]) / 100)
    assert abs(np.mean(fractions) - 0.5) < 0.03 and min(fractions) < 0.1 and max(fractions) > 0.9


def test_per_example_rng_is_stateless():
    fn = pp.span_corruption()
    tokens = np.arange(3, 203, dtype=np.int32)
    a = fn({"targets": tokens}, ctx_for(BYTE, index=5, seed=9))
    b = fn({"targets": tokens}, ctx_for(BYTE, index=5, seed=9))
    c = fn({"targets": tokens}, ctx_for(BYTE, index=6, seed=9))
    assert np.array_equal(a["inputs"], b["inputs"]) and not np.array_equal(a["inputs"], c["inputs"])


def test_too_many_spans_for_extra_ids_is_user_error():
    from t5x_lite.errors import UserError
    vocab = get_vocabulary("byte:4")
    with pytest.raises(UserError, match="sentinels"):
        pp.span_corruption()({"targets": np.full(500, 7, np.int32)}, ctx_for(vocab))


# ------------------------------------------------------------------------------------------------
# Property-based round trips (hypothesis)
# ------------------------------------------------------------------------------------------------
def token_lists(vocab):
    top = vocab.first_sentinel_id - 1   # the highest real (non-sentinel) id
    return st.lists(st.one_of(st.integers(2, top), st.just(top), st.just(top - 1)), min_size=1, max_size=200)


SEQ = st.one_of(token_lists(BYTE), st.just([BYTE.first_sentinel_id - 1]),
                st.just([BYTE.first_sentinel_id - 1, BYTE.first_sentinel_id - 2]))
SETTINGS = settings(max_examples=100, deadline=None, derandomize=True)


@SETTINGS
@given(tokens=SEQ, index=st.integers(0, 10**6), density=st.sampled_from([0.1, 0.15, 0.5]),
       span=st.sampled_from([2.0, 3.0, 10.0]))
def test_roundtrip_span_corruption(tokens, index, density, span):
    tokens = np.asarray(tokens, np.int32)
    ex = pp.span_corruption(density, span)({"targets": tokens}, ctx_for(BYTE, index))
    assert rebuild_from_sentinels(ex["inputs"], ex["targets"], BYTE.first_sentinel_id) == tokens.tolist()
    assert sentinels(ex["inputs"], BYTE) == sentinels(ex["targets"], BYTE)[:len(sentinels(ex["inputs"], BYTE))]


@SETTINGS
@given(tokens=SEQ, index=st.integers(0, 10**6), density=st.sampled_from([0.1, 0.15, 0.5]))
def test_roundtrip_iid_denoising(tokens, index, density):
    tokens = np.asarray(tokens, np.int32)
    ex = pp.iid_denoising(density)({"targets": tokens}, ctx_for(BYTE, index))
    assert rebuild_from_sentinels(ex["inputs"], ex["targets"], BYTE.first_sentinel_id) == tokens.tolist()


@SETTINGS
@given(tokens=SEQ, index=st.integers(0, 10**6))
def test_roundtrip_prefix_lm_and_full_lm(tokens, index):
    tokens = np.asarray(tokens, np.int32)
    ex = pp.prefix_lm()({"targets": tokens}, ctx_for(BYTE, index))
    assert np.concatenate([ex["inputs"], ex["targets"]]).tolist() == tokens.tolist()
    assert len(ex["targets"]) >= 1
    assert pp.full_lm({"targets": tokens}, ctx_for(BYTE, index))["targets"].tolist() == tokens.tolist()


@SETTINGS
@given(tokens=SEQ, index=st.integers(0, 10**6))
def test_roundtrip_full_target_objectives(tokens, index):
    """BERT-style, MASS-style, deshuffling: the target is the original; inputs keep the length, and
    MASS only ever replaces tokens by the mask token; deshuffling is a permutation."""
    tokens = np.asarray(tokens, np.int32)
    for fn in (pp.bert_style(), pp.mass_style(), pp.deshuffle()):
        ex = fn({"targets": tokens}, ctx_for(BYTE, index))
        assert ex["targets"].tolist() == tokens.tolist()
        assert len(ex["inputs"]) == len(tokens)
    mass = pp.mass_style()({"targets": tokens}, ctx_for(BYTE, index))["inputs"]
    assert all(a == b or a == BYTE.vocab_size - 1 for a, b in zip(mass, tokens))
    shuffled = pp.deshuffle()({"targets": tokens}, ctx_for(BYTE, index))["inputs"]
    assert sorted(shuffled.tolist()) == sorted(tokens.tolist())


@SETTINGS
@given(tokens=SEQ, index=st.integers(0, 10**6))
def test_roundtrip_drop_tokens(tokens, index):
    """Drop corrupted tokens: the positions are lost by design, so check that inputs and targets are the
    complementary subsequences selected by the (re-derived) mask."""
    tokens = np.asarray(tokens, np.int32)
    ctx = ctx_for(BYTE, index)
    ex = pp.drop_tokens()({"targets": tokens}, ctx)
    mask = pp.iid_noise_mask(len(tokens), 0.15, ctx_for(BYTE, index).rng)
    assert ex["inputs"].tolist() == tokens[~mask].tolist()
    assert ex["targets"].tolist() == tokens[mask].tolist()


@SETTINGS
@given(tokens=SEQ, index=st.integers(0, 10**6), pairs=st.booleans())
def test_roundtrip_mlm(tokens, index, pairs):
    tokens = np.asarray(tokens, np.int32)
    ex = pp.bert_mlm(next_sentence_pairs=pairs)({"targets": tokens}, ctx_for(BYTE, index))
    w = ex["loss_weights"].astype(bool)
    assert np.array_equal(ex["inputs"][~w], ex["targets"][~w])
    if pairs and len(tokens) >= 2:
        a_b = ex["targets"].tolist()
        cut = a_b.index(1)
        first, second = a_b[:cut], a_b[cut + 1:]
        assert (first + second if ex["nsp_label"] else second + first) == tokens.tolist()
    else:
        assert ex["targets"].tolist() == tokens.tolist()
