"""Decoding algorithms on a toy "language model" whose exact answers are computed by brute force.

The toy model is a fixed table of logits indexed by a hash of the whole history
(so it is not a Markov chain in the last token).  Its state is a pytree with a
batch-leading leaf, like the models' KV cache, so beam search's state
expansion/reordering is exercised.  The references below enumerate every
possible output sequence in plain numpy/python: an independent check of the
jitted while-loops.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5x_lite import decoding
from t5x_lite.errors import UserError

EOS = 1
H = 101  # number of hash states


def make_table(vocab, seed, eos_boost=0.0, scale=2.0):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(H, vocab)).astype(np.float32) * scale
    table[:, EOS] += eos_boost
    return table


def next_hash(h, tok):
    return (h * 31 + tok + 7) % H


class Toy:
    """init_fn / step_fn over a logits table; the state also carries a dummy [B, 3] 'cache'
    that must follow the beams (checked by the step function)."""

    def __init__(self, table):
        self.table = jnp.asarray(table)
        self.np_table = np.asarray(table)

    def init(self, start):  # start: [B] int32 initial hashes
        h = jnp.asarray(start, jnp.int32)
        state = {"h": h, "cache": jnp.stack([h, h * 2, h * 3], axis=1)}
        return self.table[h], state

    def step(self, state, tok):
        # The cache must still be consistent with h (it would not be if beams were reordered wrongly).
        h = state["h"]
        ok = jnp.all(state["cache"] == jnp.stack([h, h * 2, h * 3], axis=1), axis=1)
        h = next_hash(h, tok)
        logits = jnp.where(ok[:, None], self.table[h], jnp.nan)
        return logits, {"h": h, "cache": jnp.stack([h, h * 2, h * 3], axis=1)}

    # --- numpy reference ---
    def logprobs(self, h):
        x = self.np_table[h].astype(np.float64)
        return x - (np.log(np.sum(np.exp(x - x.max()))) + x.max())

    def seq_logprob(self, start, seq):
        h, total = start, 0.0
        for t in seq:
            total += self.logprobs(h)[t]
            h = next_hash(h, t)
        return total

    def all_sequences(self, vocab, length):
        """Every possible output: sequences that end at their first EOS, or reach `length`."""
        out = []
        for n in range(1, length + 1):
            for seq in itertools.product(range(vocab), repeat=n):
                if EOS in seq[:-1]:
                    continue
                if seq[-1] == EOS or n == length:
                    out.append(seq)
        return out


def jitted(fn, *args, **kw):
    """Run a decoding function under jax.jit (static settings closed over)."""
    return jax.jit(lambda *a: fn(*a, **kw))(*args)


def bp(alpha, n):
    return ((5.0 + n) / 6.0) ** alpha


def pad(seq, length):
    return list(seq) + [0] * (length - len(seq))


# ----------------------------------------------------------------------------- greedy

@pytest.mark.parametrize("eos_boost", [0.0, 2.0])
def test_greedy_matches_python_argmax(eos_boost):
    vocab, L = 7, 6
    toy = Toy(make_table(vocab, 0, eos_boost))
    starts = np.arange(16, dtype=np.int32) * 5
    logits0, state = toy.init(starts)
    out = jax.jit(lambda l, s: decoding.greedy_search(l, s, toy.step, max_decode_length=L))(logits0, state)
    tokens, scores = np.asarray(out.tokens), np.asarray(out.scores)
    saw_eos = saw_full = False
    for b, h0 in enumerate(starts):
        h, seq = int(h0), []
        for _ in range(L):
            t = int(np.argmax(toy.logprobs(h)))
            seq.append(t)
            h = next_hash(h, t)
            if t == EOS:
                break
        saw_eos |= seq[-1] == EOS
        saw_full |= seq[-1] != EOS
        assert tokens[b].tolist() == pad(seq, L)                 # EOS kept, zeros after it
        np.testing.assert_allclose(scores[b], toy.seq_logprob(int(h0), seq), rtol=1e-5, atol=1e-5)
    if eos_boost:
        assert saw_eos
    else:
        assert saw_full


# ----------------------------------------------------------------------------- beam search

@pytest.mark.parametrize("vocab,L,alpha", [(4, 3, 0.0), (3, 5, 0.6), (3, 5, 2.0)])
def test_beam_finished_pool_equals_exhaustive_ranking(vocab, L, alpha):
    """With K so large that no candidate is ever cut (2K >= live beams * V), beam search must be
    exact: its K finished hypotheses are the K best finished sequences of the exhaustive ranking
    (score = logp / ((5 + len) / 6) ** alpha), also when the early-finish rule stops it."""
    max_live = (vocab - 1) ** (L - 1)
    K = math.ceil(max_live * vocab / 2)
    toy = Toy(make_table(vocab, 1 + L, eos_boost=0.5))
    starts = np.array([3, 50, 77], np.int32)
    logits0, state = toy.init(starts)
    out = jax.jit(lambda l, s: decoding.beam_search(
        l, s, toy.step, max_decode_length=L, beam_size=K, alpha=alpha))(logits0, state)
    tokens, scores = np.asarray(out.tokens), np.asarray(out.scores)
    for b, h0 in enumerate(starts):
        finished = [s for s in toy.all_sequences(vocab, L) if s[-1] == EOS]
        ranked = sorted(((toy.seq_logprob(int(h0), s) / bp(alpha, len(s)), s) for s in finished), reverse=True)
        real = scores[b] > decoding.NEG_INF / 2
        n = min(K, len(ranked))
        assert real.sum() == n
        np.testing.assert_allclose(scores[b][:n], [r[0] for r in ranked[:n]], rtol=1e-5, atol=1e-5)
        assert [tokens[b, k].tolist() for k in range(n)] == [pad(r[1], L) for r in ranked[:n]]


def test_beam_best_equals_exhaustive_best_small_beam_on_peaked_model():
    """A small beam on a peaked model still finds the global optimum (checked by enumeration)."""
    vocab, L, alpha = 5, 4, 0.6
    toy = Toy(make_table(vocab, 11, eos_boost=1.0, scale=4.0))
    starts = np.arange(8, dtype=np.int32) * 9
    logits0, state = toy.init(starts)
    out = jitted(lambda l, s, **kw: decoding.beam_search(l, s, toy.step, **kw), logits0, state,
                 max_decode_length=L, beam_size=4, alpha=alpha)
    hits = 0
    for b, h0 in enumerate(starts):
        finished = [s for s in toy.all_sequences(vocab, L) if s[-1] == EOS]
        best = max(finished, key=lambda s: toy.seq_logprob(int(h0), s) / bp(alpha, len(s)))
        hits += np.asarray(out.tokens)[b, 0].tolist() == pad(best, L)
    assert hits >= 7  # beam search is approximate; with a peaked model it is nearly always exact


def test_beam_without_finished_returns_live_beams_and_size_one_is_greedy():
    vocab, L, K = 6, 4, 2
    table = make_table(vocab, 5)
    table[:, EOS] = -1e4  # EOS never reaches the 2K candidates: nothing finishes
    toy = Toy(table)
    starts = np.array([1, 2, 3], np.int32)
    logits0, state = toy.init(starts)
    beam = lambda l, s, **kw: decoding.beam_search(l, s, toy.step, **kw)
    out = jitted(beam, logits0, state, max_decode_length=L, beam_size=K, alpha=0.6)
    greedy = jitted(lambda l, s, **kw: decoding.greedy_search(l, s, toy.step, **kw), logits0, state,
                    max_decode_length=L)
    beam1 = jitted(beam, logits0, state, max_decode_length=L, beam_size=1, alpha=0.6, finish_rule="hf")
    np.testing.assert_array_equal(np.asarray(beam1.tokens)[:, 0], np.asarray(greedy.tokens))
    tokens, scores = np.asarray(out.tokens), np.asarray(out.scores)
    for b, h0 in enumerate(starts):
        assert EOS not in tokens[b].ravel().tolist() and (tokens[b] != 0).sum() > 0
        assert scores[b, 0] >= scores[b, 1]
        for k in range(K):  # live beams are scored by their raw log-prob (no brevity penalty)
            np.testing.assert_allclose(scores[b, k], toy.seq_logprob(int(h0), tokens[b, k]), rtol=1e-5)


def test_brevity_penalty_values():
    assert float(decoding.brevity_penalty(0.0, 7)) == 1.0
    np.testing.assert_allclose(float(decoding.brevity_penalty(0.6, 7)), (12 / 6) ** 0.6, rtol=1e-6)


# ----------------------------------------------------------------------------- sampling

@pytest.fixture(scope="module")
def sampler():
    vocab, L = 9, 6
    toy = Toy(make_table(vocab, 3, eos_boost=-1.0))
    starts = np.arange(64, dtype=np.int32) % H
    logits0, state = toy.init(starts)

    cache = {}

    def sample(seed, temperature=1.0, top_k=0, top_p=1.0):
        key = (temperature, top_k, top_p)
        if key not in cache:
            cache[key] = jax.jit(lambda r, l, s: decoding.temperature_sample(
                l, s, toy.step, r, max_decode_length=L, temperature=temperature, top_k=top_k, top_p=top_p))
        return np.asarray(cache[key](jax.random.key(seed), logits0, state).tokens)

    greedy = np.asarray(jitted(lambda l, s, **kw: decoding.greedy_search(l, s, toy.step, **kw), logits0, state,
                               max_decode_length=L).tokens)
    return toy, starts, sample, greedy


def _replay_logprobs(toy, h0, seq):
    """Per-step log-prob vectors along a sampled sequence (up to and including EOS)."""
    h, out = int(h0), []
    for t in seq:
        out.append(toy.logprobs(h))
        if t == EOS:
            break
        h = next_hash(h, int(t))
    return out


def test_same_seed_same_output_and_seeds_differ(sampler):
    _, _, sample, _ = sampler
    a, b, c = sample(0), sample(0), sample(1)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_low_temperature_equals_greedy(sampler):
    _, _, sample, greedy = sampler
    np.testing.assert_array_equal(sample(4, temperature=1e-4), greedy)
    np.testing.assert_array_equal(sample(4, temperature=0.0), greedy)
    np.testing.assert_array_equal(sample(4, top_k=1), greedy)
    np.testing.assert_array_equal(sample(4, top_p=1e-6), greedy)


@pytest.mark.parametrize("top_k", [3])
def test_top_k_never_leaves_the_top_k(sampler, top_k):
    toy, starts, sample, _ = sampler
    used_second = False
    for seed in range(3):
        tokens = sample(seed, temperature=2.0, top_k=top_k)
        for b, h0 in enumerate(starts):
            for t, lp in zip(tokens[b], _replay_logprobs(toy, h0, tokens[b])):
                rank = int(np.sum(lp > lp[t]))
                assert rank < top_k
                used_second |= rank > 0
    assert used_second  # not secretly greedy


def test_top_p_stays_in_nucleus(sampler):
    toy, starts, sample, _ = sampler
    p = 0.6
    tokens = sample(7, top_p=p)
    for b, h0 in enumerate(starts):
        for t, lp in zip(tokens[b], _replay_logprobs(toy, h0, tokens[b])):
            probs = np.exp(lp)
            better = probs[probs > probs[t]].sum()   # mass strictly above the sampled token
            assert better < p + 1e-5


def test_sampling_frequencies_follow_the_filtered_softmax():
    vocab, n = 6, 4000
    logits = jnp.tile(jnp.array([[2.0, -1.0, 1.0, 0.5, 0.0, 1.5]]), (n, 1))
    state = {"x": jnp.zeros((n, 1))}
    step = lambda s, t: (jnp.zeros((n, vocab)), s)
    for temperature, top_k in [(1.0, 0), (0.5, 3)]:
        out = jitted(lambda l, s, r, **kw: decoding.temperature_sample(l, s, step, r, **kw), logits, state,
                     jax.random.key(0), max_decode_length=1, temperature=temperature, top_k=top_k)
        freq = np.bincount(np.asarray(out.tokens)[:, 0], minlength=vocab) / n
        x = np.asarray(logits[0]) / temperature
        if top_k:
            x = np.where(x >= np.sort(x)[-top_k], x, -np.inf)
        expect = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
        np.testing.assert_allclose(freq, expect, atol=0.03)


def test_filter_logits_top_p_keeps_smallest_nucleus():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.isfinite(np.asarray(decoding.filter_logits(logits, top_p=0.7)))[0]
    assert kept.tolist() == [True, True, False, False]
    kept = np.isfinite(np.asarray(decoding.filter_logits(logits, top_p=0.81)))[0]
    assert kept.tolist() == [True, True, True, False]


def test_eos_padding_and_max_length_in_sampling(sampler):
    _, _, sample, _ = sampler
    tokens = sample(3, temperature=3.0)
    assert tokens.shape == (64, 6)
    ended = 0
    for row in tokens.tolist():
        if EOS in row:
            ended += 1
            assert all(t == 0 for t in row[row.index(EOS) + 1:])
    assert ended > 0


def test_bad_settings_are_user_errors():
    logits = jnp.zeros((1, 4))
    with pytest.raises(UserError):
        decoding.temperature_sample(logits, {}, None, jax.random.key(0), max_decode_length=2, top_p=0.0)
    with pytest.raises(UserError):
        decoding.beam_search(logits, {}, None, max_decode_length=2, beam_size=0)
    with pytest.raises(UserError):
        decoding.make_prompt("encoder_only", [[3, 4]])
    with pytest.raises(UserError):
        decoding.make_prompt("encoder_decoder", [[3, 4, 5]], length=2)
