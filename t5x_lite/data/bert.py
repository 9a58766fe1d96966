"""BERT's input format and its pretraining data (Devlin et al. 2019): sentence pairs for next-sentence
prediction (NSP) plus masked-LM corruption.

Special tokens.  T5's SentencePiece vocabularies (and the byte vocabulary) have no [CLS], [SEP] or
[MASK]; t5x_lite uses three of the vocabulary's extra ids (sentinels), here and nowhere else:

    [MASK] = <extra_id_0> = vocab_size - 1   (already T5's mask token for BERT-style objectives)
    [CLS]  = <extra_id_1> = vocab_size - 2
    [SEP]  = <extra_id_2> = vocab_size - 3

An example is `[CLS] A [SEP] B [SEP]` with token type (segment) ids 0 on `[CLS] A [SEP]` and 1 on
`B [SEP]`, or `[CLS] A [SEP]` (all 0) for one segment.  Random replacement tokens are drawn from the
ordinary ids [3, first sentinel), so they are never special.

Next-sentence pairs need a second document, which one example alone cannot see: `NextSentenceSource`
wraps a source so that row i also carries the text of a partner document j != i, chosen by
default_rng([seed, i]) -- a pure function of (seed, i), so grain's shuffling, sharding and exact resume
are untouched.  Per document (the document stage's RNG, f(pipeline seed, index)):

  1. a cut at a random word boundary (between whitespace-separated words; between tokens for a
     text of one word): A = the tokens before it, B = the tokens after it, truncated longest-first
     to L - 3 tokens in all (L = feature_lengths["inputs"]), keeping the tokens nearest the cut;
     documents with fewer than 2 words (and tokens) are dropped;
  2. with probability 0.5 (IsNext, nsp_label 1) B stays, else (NotNext, 0) B is as many tokens of
     the partner document from a random word on (about as many words as B had);
  3. MLM: each non-special token selected with probability 0.15; a selected token becomes [MASK]
     (80%), a random token (10%) or stays (10%); the loss is on the selected tokens only.

Output: inputs (corrupted), targets (original), loss_weights (1 on selected tokens), token_type_ids,
nsp_label.  The encoder_only feature converter packs them (encoder_token_type_ids,
encoder_nsp_labels); see docs/models.md (encoder section).
"""

from __future__ import annotations

import numpy as np

from t5x_lite.data.preprocessors import Context, Feature, _mask_or_random, iid_noise_mask
from t5x_lite.data.sources import DataSource
from t5x_lite.data.tasks import Task
from t5x_lite.errors import UserError

MASK_SENTINEL, CLS_SENTINEL, SEP_SENTINEL = 0, 1, 2
OTHER_FIELD = "next_sentence_other"   # the partner document's text, added by NextSentenceSource


def special_ids(vocab) -> tuple[int, int, int]:
    """([CLS], [SEP], [MASK]) token ids of a vocabulary (see the module docstring)."""
    if vocab.extra_ids < 3:
        raise UserError(f"BERT inputs need 3 extra ids ([MASK], [CLS], [SEP] = <extra_id_0..2>); this "
                        f"vocabulary has {vocab.extra_ids}")
    return vocab.sentinel_id(CLS_SENTINEL), vocab.sentinel_id(SEP_SENTINEL), vocab.sentinel_id(MASK_SENTINEL)


def truncate_pair(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Lengths of A and B after BERT's longest-first truncation to la + lb <= budget."""
    la = min(la, max(budget - lb, budget // 2))
    return la, min(lb, budget - la)


def pack_pair(a, b, vocab, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """`[CLS] A [SEP] B [SEP]` (or `[CLS] A [SEP]` when b is None), truncated longest-first to
    max_length tokens -> (tokens, token type ids), both int32."""
    cls, sep, _ = special_ids(vocab)
    a = np.asarray(a, np.int32)
    if b is None:
        a = a[:max(max_length - 2, 0)]
        tokens = np.concatenate([[cls], a, [sep]])
        return tokens.astype(np.int32), np.zeros(len(tokens), np.int32)
    b = np.asarray(b, np.int32)
    la, lb = truncate_pair(len(a), len(b), max(max_length - 3, 0))
    tokens = np.concatenate([[cls], a[:la], [sep], b[:lb], [sep]]).astype(np.int32)
    types = np.concatenate([np.zeros(la + 2, np.int32), np.ones(lb + 1, np.int32)])
    return tokens, types


def mask_tokens(tokens: np.ndarray, vocab, rng: np.random.Generator, noise_density: float = 0.15,
                mask_prob: float = 0.8, random_prob: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """BERT's MLM corruption of a packed pair -> (inputs, loss_weights); [CLS]/[SEP]/padding never chosen."""
    cls, sep, _ = special_ids(vocab)
    chosen = iid_noise_mask(len(tokens), noise_density, rng) & ~np.isin(tokens, (cls, sep, 0))
    inputs = _mask_or_random(tokens, chosen, vocab, rng, random_prob, keep_prob=1.0 - mask_prob - random_prob)
    return inputs, chosen.astype(np.int32)


# --------------------------------------------------------------------------------------------------
# A second document per row
# --------------------------------------------------------------------------------------------------
class NextSentenceSource(DataSource):
    """Another source's splits, each row {field: text, OTHER_FIELD: text of a partner document of the same
    split}; partner(i) != i, drawn by default_rng([seed, i]) (a pure function: deterministic, resumable)."""

    def __init__(self, base: DataSource, field: str = "text", seed: int = 0):
        super().__init__()
        self.base, self.field, self.seed = base, field, int(seed)
        self.description = f"{base.description}, each document paired with another (seed {seed})"

    @property
    def splits(self):
        return self.base.splits

    def _load(self, split):
        rows = self.base.get(split)
        if len(rows) < 2:
            raise UserError(f"next-sentence pairs need at least 2 documents; {self.base!r} split {split!r} "
                            f"has {len(rows)}")
        return _PairedRows(rows, self.field, self.seed)

    def __repr__(self):
        return f"NextSentenceSource({self.base!r}, seed={self.seed})"


def partner_index(i: int, n: int, seed: int) -> int:
    """The partner document of row i of n (uniform over the other n - 1 rows)."""
    return (i + 1 + int(np.random.default_rng([seed & 0xFFFFFFFF, i]).integers(n - 1))) % n


class _PairedRows:
    def __init__(self, rows, field: str, seed: int):
        self.rows, self.field, self.seed = rows, field, seed

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        i = int(i)
        row = dict(self.rows[i])
        row[OTHER_FIELD] = self.rows[partner_index(i, len(self.rows), self.seed)][self.field]
        return row


# --------------------------------------------------------------------------------------------------
# Preprocessors and the task
# --------------------------------------------------------------------------------------------------
def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _units(vocab, text: str):
    """(units, encode): the text's whitespace-separated words when it has two or more (so a cut falls
    between words, as BERT's falls between sentences), else its tokens (a text without spaces)."""
    words = text.split()
    if len(words) >= 2:
        return words, lambda units: vocab.encode(" ".join(units))
    return list(vocab.encode(text)), list


def next_sentence_pair(text_key: str = "text", noise_density: float = 0.15, mask_prob: float = 0.8,
                       random_prob: float = 0.1):
    """The document-stage preprocessor of the module docstring: row -> one MLM + NSP example."""
    def _pair(ex: dict, ctx: Context) -> dict | None:
        vocab = ctx.vocab("inputs")
        budget = ctx.length("inputs") - 3
        if budget < 2:
            raise UserError(f"BERT pairs need feature_lengths['inputs'] >= 5, got {budget + 3}")
        if OTHER_FIELD not in ex:
            raise UserError("next-sentence pairs need a NextSentenceSource (t5x_lite/data/bert.py bert_task)")
        units, encode = _units(vocab, _text(ex[text_key]))
        if len(units) < 2:
            return None
        rng = ctx.rng
        k = int(rng.integers(1, len(units)))                       # the cut: A ends, B starts
        before = encode(units[max(0, k - budget):k])[-budget:]     # every unit is >= 1 token
        after = encode(units[k:k + budget])[:budget]
        if not before or not after:
            return None
        la, lb = truncate_pair(len(before), len(after), budget)     # keep the tokens nearest the cut
        a = before[len(before) - la:]
        is_next = bool(rng.random() < 0.5)
        if is_next:
            b = after[:lb]
        else:                                                       # as many units of the partner, at random
            other, other_encode = _units(vocab, _text(ex[OTHER_FIELD]))
            n = min(len(units) - k, budget)
            j = int(rng.integers(0, max(len(other) - n, 0) + 1))
            b = other_encode(other[j:j + n])[:lb]
        tokens, types = pack_pair(a, b, vocab, budget + 3)
        inputs, weights = mask_tokens(tokens, vocab, rng, noise_density, mask_prob, random_prob)
        return {"inputs": inputs, "targets": tokens, "loss_weights": weights, "token_type_ids": types,
                "nsp_label": np.int32(is_next)}
    _pair.__name__ = f"bert_next_sentence_pair({noise_density})"
    return _pair


def bert_task(name: str, source: DataSource, vocabulary, text_key: str = "text", description: str = "",
              seed: int = 0, **objective_kw):
    """A BERT pretraining task (MLM + NSP pairs, module docstring) on a text source."""
    return Task(name, NextSentenceSource(source, text_key, seed), [next_sentence_pair(text_key, **objective_kw)],
                {"inputs": Feature(vocabulary), "targets": Feature(vocabulary)},
                description=description or f"BERT MLM + next-sentence pairs on {source.description}")
