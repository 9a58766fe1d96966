"""Preprocessors: seqio-like building blocks and the T5 paper's pre-training objectives, in numpy.

A preprocessor is a callable `f(example: dict, ctx: Context) -> dict | None` (None drops the example).
`ctx.rng` is a numpy Generator seeded statelessly from (pipeline seed, stage, example index), so every
random choice is reproducible and independent of thread scheduling or of where a run was resumed.
`ConcatAndSplit` is the one stream (many-to-many) step: T5's reduce_concat_tokens + split_tokens.

Objectives (Raffel et al. 2020; names of the T5 gin files in brackets), all parameterized by corruption
rate and span length so Tables 4-7 can be reproduced:
  span_corruption      random_spans_noise_mask + unique sentinels          [span_{2,3,5,10}_15_u_u]
  iid_denoising        iid_noise_mask + unique sentinels ("replace spans")  [iid_{10,15,25,50}_u_u]
  prefix_lm            random split point, prefix -> inputs, rest -> targets [prefix_lm]
  full_lm              targets only                                          [lm]
  bert_style           15% corrupted; 90% mask / 10% random; target=original [iid_15_r10s90_f]
  mass_style           15% corrupted -> mask; target = original              [iid_15_m_f]
  drop_tokens          corrupted tokens dropped from inputs, are the targets [iid_15_d_d]
  deshuffle            inputs = shuffled tokens, target = original           [all_permute]
  bert_mlm             encoder-only BERT MLM: 80% mask / 10% random / 10% keep, loss on the chosen 15%
The mask token of BERT/MASS/MLM is the sentinel <extra_id_0> (= vocab_size - 1), as T5 does; random
replacement tokens are drawn uniformly from the non-special, non-sentinel ids [3, first_sentinel).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from t5x_lite.data.vocabularies import EOS_ID
from t5x_lite.errors import UserError


# --------------------------------------------------------------------------------------------------
# Context and features
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Feature:
    """One output feature of a task: its vocabulary and whether EOS is appended."""
    vocabulary: Any
    add_eos: bool = True
    required: bool = True


class Context:
    """Per-example context handed to preprocessors.  The RNG is created lazily (cheap for
    deterministic steps) from SeedSequence([seed, stage, index]): stateless and order-free."""

    __slots__ = ("seed", "stage", "index", "feature_lengths", "output_features", "split", "_rng")

    def __init__(self, seed: int, stage: int, index: int, feature_lengths: Mapping[str, int] | None,
                 output_features: Mapping[str, Feature], split: str = "train"):
        self.seed, self.stage, self.index = int(seed), int(stage), int(index)
        self.feature_lengths = dict(feature_lengths or {})
        self.output_features = output_features
        self.split = split
        self._rng = None

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.stage, self.index])
        return self._rng

    def vocab(self, feature: str = "targets"):
        return self.output_features[feature].vocabulary

    def length(self, feature: str) -> int:
        if feature not in self.feature_lengths:
            raise UserError(f"feature_lengths needs a {feature!r} entry (got {sorted(self.feature_lengths)})")
        return int(self.feature_lengths[feature])


Preprocessor = Callable[[dict, Context], "dict | None"]


@dataclasses.dataclass(frozen=True)
class ConcatAndSplit:
    """reduce_concat_tokens + split_tokens as one streaming step: the token sequences of `feature` from
    consecutive examples are concatenated into one stream and cut into pieces of `length_fn(lengths)`
    tokens (T5 concatenates 128 documents at a time; a continuous stream is the limit of that and wastes
    no remainder pieces).  Other fields are dropped.  Output: {feature: np.int32 [<= length]}."""
    length_fn: Callable[[Mapping[str, int]], int]
    feature: str = "targets"
    name: str = "concat_and_split"


# --------------------------------------------------------------------------------------------------
# seqio-like building blocks
# --------------------------------------------------------------------------------------------------
def rekey(mapping: Mapping[str, str]) -> Preprocessor:
    """New example {new_key: ex[old_key]}; an empty old key gives ""."""
    def _rekey(ex, ctx):
        return {new: (ex[old] if old else "") for new, old in mapping.items()}
    _rekey.__name__ = f"rekey({dict(mapping)})"
    return _rekey


def tokenize(ex: dict, ctx: Context) -> dict:
    """Tokenize every output feature that is a string; keep the text as `<name>_pretokenized`."""
    out = dict(ex)
    for name, feat in ctx.output_features.items():
        value = ex.get(name)
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, str):
            out[name] = np.asarray(feat.vocabulary.encode(value), np.int32)
            out[f"{name}_pretokenized"] = value
    return out


def append_eos(ex: dict, ctx: Context) -> dict:
    out = dict(ex)
    for name, feat in ctx.output_features.items():
        if feat.add_eos and name in ex:
            out[name] = np.concatenate([np.asarray(ex[name], np.int32), [EOS_ID]]).astype(np.int32)
    return out


def append_eos_after_trim(ex: dict, ctx: Context) -> dict:
    """Trim each feature to its length - 1, then append EOS, so EOS survives trimming."""
    out = dict(ex)
    for name, feat in ctx.output_features.items():
        if name not in ex:
            continue
        tokens = np.asarray(ex[name], np.int32)
        if feat.add_eos:
            if name in ctx.feature_lengths:
                tokens = tokens[: ctx.feature_lengths[name] - 1]
            tokens = np.concatenate([tokens, [EOS_ID]]).astype(np.int32)
        elif name in ctx.feature_lengths:
            tokens = tokens[: ctx.feature_lengths[name]]
        out[name] = tokens
    return out


def select_random_chunk(max_length: int = 65536, feature: str = "targets") -> Preprocessor:
    """Keep a random window of at most max_length tokens of each document (T5: 65536)."""
    def _select(ex, ctx):
        tokens = np.asarray(ex[feature], np.int32)
        if len(tokens) == 0:
            return None
        if len(tokens) > max_length:
            num_chunks = -(-len(tokens) // max_length)
            start = int(ctx.rng.integers(num_chunks)) * max_length
            tokens = tokens[start:start + max_length]
        return {feature: tokens}
    _select.__name__ = f"select_random_chunk({max_length})"
    return _select


def reduce_concat_tokens(token_lists: list[np.ndarray]) -> np.ndarray:
    """Concatenate the token sequences of several examples (T5's reduce_concat_tokens on one batch)."""
    return np.concatenate([np.asarray(t, np.int32) for t in token_lists]) if token_lists else np.zeros(0, np.int32)


def split_tokens(tokens: np.ndarray, max_tokens_per_segment: int) -> list[np.ndarray]:
    """Cut one sequence into segments of max_tokens_per_segment (the last one may be shorter)."""
    return [tokens[i:i + max_tokens_per_segment] for i in range(0, len(tokens), max_tokens_per_segment)]


# --------------------------------------------------------------------------------------------------
# Noise masks (boolean, True = noise/corrupted)
# --------------------------------------------------------------------------------------------------
def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            rng: np.random.Generator) -> np.ndarray:
    """T5's span mask: round(length*density) noise tokens (clamped to [1, length-1]) in
    max(1, round(num_noise/mean)) spans; noise and non-noise spans alternate, starting with non-noise;
    both kinds of span lengths are a uniformly random partition into non-empty segments."""
    orig_length = length
    length = max(length, 2)
    num_noise = int(np.clip(round(length * noise_density), 1, length - 1))
    num_nonnoise = length - num_noise
    num_spans = max(1, int(round(num_noise / mean_noise_span_length)))
    num_spans = min(num_spans, num_noise, num_nonnoise)

    def segmentation(num_items: int, num_segments: int) -> np.ndarray:
        cuts = np.sort(rng.choice(num_items - 1, num_segments - 1, replace=False) + 1) if num_segments > 1 \
            else np.zeros(0, np.int64)
        return np.diff(np.concatenate([[0], cuts, [num_items]]))

    noise_lengths = segmentation(num_noise, num_spans)
    nonnoise_lengths = segmentation(num_nonnoise, num_spans)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)   # nn0, n0, nn1, n1, ...
    is_noise = np.tile([False, True], num_spans)
    mask = np.repeat(is_noise, interleaved)
    return mask[:orig_length]


def iid_noise_mask(length: int, noise_density: float, rng: np.random.Generator) -> np.ndarray:
    return rng.random(length) < noise_density


def random_prefix_noise_mask(length: int, noise_density: float, rng: np.random.Generator) -> np.ndarray:
    """Noise = a suffix.  Prefix length uniform in [max(1, round((1-2d)(L-1))), L-1], so for d=0.5 the
    split point is uniform over the sequence (expected noise fraction ~ d).  L == 1: all noise."""
    if length <= 1:
        return np.ones(length, bool)
    max_prefix = length - 1
    min_prefix = min(max_prefix, max(1, int(round((1 - 2 * min(noise_density, 0.5)) * max_prefix))))
    prefix = int(rng.integers(min_prefix, max_prefix + 1))
    return np.arange(length) >= prefix


# --------------------------------------------------------------------------------------------------
# Encodings of (tokens, mask) into inputs/targets
# --------------------------------------------------------------------------------------------------
def noise_span_to_unique_sentinel(tokens: np.ndarray, mask: np.ndarray, vocab_size: int) -> np.ndarray:
    """Each run of noise tokens -> one sentinel; the k-th run gets vocab_size - 1 - k."""
    prev = np.concatenate([[False], mask[:-1]])
    first = mask & ~prev
    subsequent = mask & prev
    sentinels = vocab_size - np.cumsum(first)
    return np.where(first, sentinels, tokens)[~subsequent].astype(np.int32)


def nonnoise_span_to_unique_sentinel(tokens, mask, vocab_size):
    return noise_span_to_unique_sentinel(tokens, ~mask, vocab_size)


def drop_noise_tokens(tokens, mask):
    return tokens[~mask].astype(np.int32)


def drop_nonnoise_tokens(tokens, mask):
    return tokens[mask].astype(np.int32)


def _num_runs(mask: np.ndarray) -> int:
    return int(np.sum(mask & ~np.concatenate([[False], mask[:-1]])))


def _check_sentinels(mask: np.ndarray, vocab) -> None:
    needed = max(_num_runs(mask), _num_runs(~mask))
    if needed > vocab.extra_ids:
        raise UserError(f"{needed} noise spans need more sentinels than the vocabulary's {vocab.extra_ids} "
                        "extra ids: use a vocabulary with more extra ids, a longer mean span or shorter sequences")


# --------------------------------------------------------------------------------------------------
# Objectives (each returns a preprocessor on {"targets": tokens} -> {"inputs", "targets"})
# --------------------------------------------------------------------------------------------------
def random_spans_helper(inputs_length: int = 512, noise_density: float = 0.15,
                        mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """Raw tokens T such that span corruption of T tokens fills `inputs_length` exactly (incl. EOS), and
    the resulting targets length: 512 -> (568, 114).  Same arithmetic as T5's random_spans_helper."""
    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise = int(round(tokens_length * noise_density))
        num_nonnoise = tokens_length - num_noise
        num_spans = int(round(num_noise / mean_noise_span_length))
        return num_nonnoise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, lengths(tokens_length)[1]


def _denoise(mask_fn, inputs_fn, targets_fn, name: str) -> Preprocessor:
    def _apply(ex, ctx):
        tokens = np.asarray(ex["targets"], np.int32)
        if len(tokens) == 0:
            return None
        vocab = ctx.vocab("targets")
        mask = mask_fn(len(tokens), ctx.rng)
        return {"inputs": inputs_fn(tokens, mask, vocab, ctx.rng), "targets": targets_fn(tokens, mask, vocab, ctx.rng)}
    _apply.__name__ = name
    return _apply


def _unique_sentinel_inputs(tokens, mask, vocab, rng):
    _check_sentinels(mask, vocab)
    return noise_span_to_unique_sentinel(tokens, mask, vocab.vocab_size)


def _unique_sentinel_targets(tokens, mask, vocab, rng):
    return nonnoise_span_to_unique_sentinel(tokens, mask, vocab.vocab_size)


def _original(tokens, mask, vocab, rng):
    return tokens.copy()


def span_corruption(noise_density: float = 0.15, mean_noise_span_length: float = 3.0) -> Preprocessor:
    return _denoise(lambda n, rng: random_spans_noise_mask(n, noise_density, mean_noise_span_length, rng),
                    _unique_sentinel_inputs, _unique_sentinel_targets,
                    f"span_corruption({noise_density}, {mean_noise_span_length})")


def iid_denoising(noise_density: float = 0.15) -> Preprocessor:
    return _denoise(lambda n, rng: iid_noise_mask(n, noise_density, rng),
                    _unique_sentinel_inputs, _unique_sentinel_targets, f"iid_denoising({noise_density})")


def prefix_lm(noise_density: float = 0.5) -> Preprocessor:
    return _denoise(lambda n, rng: random_prefix_noise_mask(n, noise_density, rng),
                    lambda t, m, v, r: drop_noise_tokens(t, m), lambda t, m, v, r: drop_nonnoise_tokens(t, m),
                    f"prefix_lm({noise_density})")


def drop_tokens(noise_density: float = 0.15) -> Preprocessor:
    return _denoise(lambda n, rng: iid_noise_mask(n, noise_density, rng),
                    lambda t, m, v, r: drop_noise_tokens(t, m), lambda t, m, v, r: drop_nonnoise_tokens(t, m),
                    f"drop_tokens({noise_density})")


def _mask_or_random(tokens, mask, vocab, rng, random_prob: float, keep_prob: float = 0.0):
    """Corrupted positions -> random token with random_prob, kept with keep_prob, else the mask token."""
    out = tokens.copy()
    u = rng.random(len(tokens))
    mask_token = vocab.sentinel_id(0)
    use_random = mask & (u < random_prob)
    use_keep = mask & (u >= random_prob) & (u < random_prob + keep_prob)
    use_mask = mask & ~use_random & ~use_keep
    out[use_mask] = mask_token
    n_random = int(use_random.sum())
    if n_random:
        out[use_random] = rng.integers(3, vocab.first_sentinel_id, n_random)
    return out.astype(np.int32)


def bert_style(noise_density: float = 0.15, random_prob: float = 0.1) -> Preprocessor:
    return _denoise(lambda n, rng: iid_noise_mask(n, noise_density, rng),
                    lambda t, m, v, r: _mask_or_random(t, m, v, r, random_prob), _original,
                    f"bert_style({noise_density}, random={random_prob})")


def mass_style(noise_density: float = 0.15) -> Preprocessor:
    return _denoise(lambda n, rng: iid_noise_mask(n, noise_density, rng),
                    lambda t, m, v, r: _mask_or_random(t, m, v, r, 0.0), _original, f"mass_style({noise_density})")


def deshuffle() -> Preprocessor:
    return _denoise(lambda n, rng: np.zeros(n, bool),
                    lambda t, m, v, r: r.permutation(t).astype(np.int32), _original, "deshuffle")


def full_lm(ex: dict, ctx: Context) -> dict | None:
    tokens = np.asarray(ex["targets"], np.int32)
    return {"targets": tokens} if len(tokens) else None


def bert_mlm(noise_density: float = 0.15, mask_prob: float = 0.8, random_prob: float = 0.1,
             next_sentence_pairs: bool = False) -> Preprocessor:
    """Encoder-only MLM.  inputs = corrupted tokens, targets = original tokens, loss_weights = 1 on the
    chosen positions.  With next_sentence_pairs, the chunk is cut at a random point into A and B and with
    probability 0.5 given as "B EOS A" instead of "A EOS B"; nsp_label = 1 when the order is the original
    (ALBERT-style sentence order, since one example cannot see another document)."""
    def _mlm(ex, ctx):
        tokens = np.asarray(ex["targets"], np.int32)
        if len(tokens) == 0:
            return None
        out: dict = {}
        if next_sentence_pairs and len(tokens) >= 2:
            cut = int(ctx.rng.integers(1, len(tokens)))
            a, b = tokens[:cut], tokens[cut:]
            is_next = bool(ctx.rng.random() < 0.5)
            first, second = (a, b) if is_next else (b, a)
            tokens = np.concatenate([first, [EOS_ID], second]).astype(np.int32)
            out["nsp_label"] = np.int32(is_next)
        vocab = ctx.vocab("targets")
        mask = iid_noise_mask(len(tokens), noise_density, ctx.rng)
        mask &= tokens != EOS_ID
        inputs = _mask_or_random(tokens, mask, vocab, ctx.rng, random_prob, keep_prob=1 - mask_prob - random_prob)
        out.update(inputs=inputs, targets=tokens, loss_weights=mask.astype(np.int32))
        return out
    _mlm.__name__ = f"bert_mlm({noise_density})"
    return _mlm


def mlm_append_eos_after_trim(ex: dict, ctx: Context) -> dict:
    """append_eos_after_trim for MLM examples: inputs/targets/loss_weights stay aligned."""
    n = ctx.length("inputs") - 1
    out = dict(ex)
    out["inputs"] = np.concatenate([ex["inputs"][:n], [EOS_ID]]).astype(np.int32)
    out["targets"] = np.concatenate([ex["targets"][:n], [EOS_ID]]).astype(np.int32)
    out["loss_weights"] = np.concatenate([ex["loss_weights"][:n], [0]]).astype(np.int32)
    return out


# --------------------------------------------------------------------------------------------------
# Chunk lengths (raw tokens per example) for each objective, from the feature lengths
# --------------------------------------------------------------------------------------------------
def span_corruption_length(noise_density=0.15, mean_noise_span_length=3.0):
    return lambda lengths: random_spans_helper(int(lengths["inputs"]), noise_density, mean_noise_span_length)[0]


def inputs_length_minus_eos(lengths: Mapping[str, int]) -> int:
    return int(lengths["inputs"]) - 1


def targets_length(lengths: Mapping[str, int]) -> int:
    return int(lengths["targets"])


def pretraining_preprocessors(objective: str, text_key: str = "text", **kw) -> list:
    """The full chain for a text corpus: rekey -> tokenize -> select_random_chunk -> concat+split ->
    objective -> append_eos_after_trim.  `objective` is one of OBJECTIVES."""
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r}; choose from {sorted(OBJECTIVES)}")
    make_fn, length_fn, finish = OBJECTIVES[objective]
    if make_fn is None:
        raise UserError(f"objective {objective!r} is built by tasks.pretraining_task (t5x_lite/data/bert.py)")
    fn, lf = make_fn(**kw), length_fn(**kw) if objective == "span_corruption" else length_fn
    head = [rekey({"targets": text_key}), tokenize, select_random_chunk()]
    if objective == "full_lm":
        head.append(append_eos)   # T5 full_lm: EOS at each document end, then concatenate and split
    return head + [ConcatAndSplit(lf), fn] + finish


OBJECTIVES: dict[str, tuple] = {
    "span_corruption": (span_corruption, span_corruption_length, [append_eos_after_trim]),
    "iid_denoising": (iid_denoising, inputs_length_minus_eos, [append_eos_after_trim]),
    "prefix_lm": (prefix_lm, inputs_length_minus_eos, [append_eos_after_trim]),
    "full_lm": (lambda: full_lm, targets_length, []),
    "bert_style": (bert_style, inputs_length_minus_eos, [append_eos_after_trim]),
    "mass_style": (mass_style, inputs_length_minus_eos, [append_eos_after_trim]),
    "drop_tokens": (drop_tokens, inputs_length_minus_eos, [append_eos_after_trim]),
    "deshuffle": (deshuffle, inputs_length_minus_eos, [append_eos_after_trim]),
    "bert_mlm": (bert_mlm, inputs_length_minus_eos, [mlm_append_eos_after_trim]),
    # BERT's MLM + next-sentence pairs work per document and need a second one: not a chain of this
    # module; tasks.pretraining_task builds it with t5x_lite/data/bert.py.
    "bert": (None, None, None),
}
