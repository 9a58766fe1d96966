"""The built-in pre-training tasks.

On the shipped corpus (vocabulary "builtin"): builtin_span_corruption (T5 default), builtin_iid_denoising,
builtin_prefix_lm, builtin_lm, builtin_bert_style, builtin_mass_style, builtin_drop_tokens,
builtin_deshuffle, builtin_mlm (encoder-only), plus the Table 6/7 variants builtin_iid_denoising_{10,25,50}
and builtin_span_corruption_len{2,5,10}.
One downstream task on the same corpus, so fine-tuning runs where no downloaded or locally built
dataset exists (the smoke-scale studies, CI): builtin_wordnet_pos, a WordNet gloss -> its part of speech
(noun / verb / adjective / adverb), accuracy.
T5's own names for C4 (field "text"): c4_v220_span_corruption, c4_v220_iid_denoising, c4_v220_prefix_lm,
c4_v220_full_lm, read from allenai/c4 json.gz shards in <TFDS data dir>/c4/en/ when they are there, else
from TFDS c4/en:2.2.0 (array_record); vocabulary "builtin", or T5's SentencePiece model when
$T5X_LITE_T5_VOCAB names it (downstream.t5_vocabulary).

Importing this module also fills the metric table of the file specs (t5x_lite.data.file_tasks.METRICS:
"csv:...?inputs=..&targets=..&metrics=accuracy+bleu").
"""

from __future__ import annotations

import re

import numpy as np

from t5x_lite.data import file_tasks
from t5x_lite.data.file_sources import FilesOrTfdsSource
from t5x_lite.data.sources import BuiltinSource, DataSource
from t5x_lite.data.tasks import TaskRegistry, pretraining_task
from t5x_lite.data.vocabularies import get_vocabulary
from t5x_lite.tasks import metrics as M
from t5x_lite.tasks import postprocessors as P
from t5x_lite.tasks.downstream import t5_vocabulary, text_task

# The metrics a file spec may name (metrics=accuracy+rouge); scores are percentages like every metric here.
FILE_SPEC_METRICS = {
    "accuracy": M.accuracy,          # the decoded text equals the target (surrounding whitespace stripped)
    "exact_match": M.squad,          # SQuAD-normalized exact match and token F1 (em, f1)
    "macro_f1": M.macro_f1,          # mean F1 over the target strings seen (classification)
    "bleu": M.bleu,                  # SacreBLEU, T5's settings
    "rouge": M.rouge,                # ROUGE-1/2/L/Lsum F
}
file_tasks.METRICS.update(FILE_SPEC_METRICS)

# The shipped WordNet documents read `lemma, lemma2 (noun): gloss; "example"`; these four parts of
# speech are every value that occurs (satellite adjectives are written "adjective").
WORDNET_POS = ("noun", "verb", "adjective", "adverb")
_WORDNET_DOC = re.compile(r"^.*? \((noun|verb|adjective|adverb)\): (.+)$", re.S)

_BUILTIN_DESCRIPTIONS = {
    "span_corruption": "T5 span corruption (15%, mean span 3; inputs 512 <- 568 raw tokens, targets 114)",
    "iid_denoising": "i.i.d. denoising, 15%, each run of dropped tokens -> one sentinel (Table 5 'replace spans')",
    "prefix_lm": "prefix LM: random split point, prefix -> inputs, rest -> targets",
    "full_lm": "language modeling: targets only (decoder-only)",
    "bert_style": "BERT-style: 15% corrupted (90% mask, 10% random), target = original (Table 4)",
    "mass_style": "MASS-style: 15% masked, target = original (Table 5)",
    "drop_tokens": "drop corrupted tokens: 15% dropped from inputs, targets = dropped tokens (Table 5)",
    "deshuffle": "deshuffling: inputs = shuffled tokens, target = original (Table 4)",
    "bert_mlm": "BERT MLM for the encoder-only model (80% mask / 10% random / 10% keep on 15%)",
}


def wordnet_pos_text(ex, ctx):
    """`lemma (pos): gloss` -> {"inputs": "wordnet pos: gloss", "targets": pos}; every other document
    (Shakespeare) -> None, i.e. filtered out."""
    text = ex["text"].decode("utf-8") if isinstance(ex["text"], bytes) else str(ex["text"])
    m = _WORDNET_DOC.match(text)
    if m is None:
        return None
    return {"inputs": "wordnet pos: " + m.group(2), "targets": m.group(1)}


class PermutedSource(DataSource):
    """Another source's splits in one fixed pseudo-random order.  The shipped corpus is in WordNet
    order (all nouns first), and an evaluator reads the first N examples of a split: permuted, those
    are a representative sample.  The splits themselves (which documents) are unchanged."""

    def __init__(self, base: DataSource, seed: int = 0):
        super().__init__()
        self.base, self.seed = base, seed
        self.description = f"{base.description}, in a fixed shuffled order (seed {seed})"

    @property
    def splits(self):
        return self.base.splits

    def _load(self, split):
        rows = self.base.get(split)
        order = np.random.default_rng(self.seed).permutation(len(rows))
        return _Reordered(rows, order)

    def __repr__(self):
        return f"PermutedSource({self.base!r}, seed={self.seed})"


class _Reordered:
    def __init__(self, rows, order):
        self.rows, self.order = rows, order

    def __len__(self):
        return len(self.order)

    def __getitem__(self, i):
        return self.rows[int(self.order[i])]


def _register_builtin() -> None:
    source = BuiltinSource()
    vocab = get_vocabulary("builtin")
    corpus = "shipped WordNet+Shakespeare corpus"
    names = {"span_corruption": "builtin_span_corruption", "iid_denoising": "builtin_iid_denoising",
             "prefix_lm": "builtin_prefix_lm", "full_lm": "builtin_lm", "bert_style": "builtin_bert_style",
             "mass_style": "builtin_mass_style", "drop_tokens": "builtin_drop_tokens",
             "deshuffle": "builtin_deshuffle", "bert_mlm": "builtin_mlm"}
    for objective, name in names.items():
        TaskRegistry.add(pretraining_task(name, source, objective, vocab,
                                          description=f"{_BUILTIN_DESCRIPTIONS[objective]}; {corpus}"))
    for rate in (10, 25, 50):   # Table 6
        TaskRegistry.add(pretraining_task(f"builtin_iid_denoising_{rate}", source, "iid_denoising", vocab,
                                          description=f"i.i.d. denoising at {rate}% corruption (Table 6); {corpus}",
                                          noise_density=rate / 100))
    for span in (2, 5, 10):     # Table 7
        TaskRegistry.add(pretraining_task(f"builtin_span_corruption_len{span}", source, "span_corruption", vocab,
                                          description=f"span corruption, mean span length {span} (Table 7); {corpus}",
                                          mean_noise_span_length=float(span)))
    TaskRegistry.add(text_task(
        "builtin_wordnet_pos", PermutedSource(source), wordnet_pos_text, [M.accuracy],
        P.make_label_postprocessor(WORDNET_POS), vocabulary=vocab,
        description="WordNet gloss -> part of speech (noun/verb/adjective/adverb; 70% nouns); accuracy; "
                    "the shipped corpus's WordNet documents, its train/validation split, Shakespeare left out"))
    for task in c4_tasks(t5_vocabulary()):
        TaskRegistry.add(task)


C4_OBJECTIVES = (("span_corruption", "c4_v220_span_corruption"), ("iid_denoising", "c4_v220_iid_denoising"),
                 ("prefix_lm", "c4_v220_prefix_lm"), ("full_lm", "c4_v220_full_lm"))


def c4_source(data_dir: str | None = None) -> FilesOrTfdsSource:
    """C4 en: <data dir>/c4/en/c4-{train,validation}.*.json.gz (allenai/c4) if present, else TFDS c4/en:2.2.0."""
    return FilesOrTfdsSource("c4/en:2.2.0", data_dir, splits=("train", "validation"), layout="c4_json")


def c4_tasks(vocab, data_dir: str | None = None) -> list:
    """T5's c4_v220_* tasks with a vocabulary (a Vocabulary or a spec)."""
    vocab = get_vocabulary(vocab) if isinstance(vocab, str) else vocab
    source = c4_source(data_dir)
    return [pretraining_task(name, source, objective, vocab,
                             description=f"{_BUILTIN_DESCRIPTIONS[objective]}; C4 en: allenai/c4 json.gz or TFDS "
                                         "c4/en:2.2.0 in the TFDS data dir")
            for objective, name in C4_OBJECTIVES]


if "builtin_span_corruption" not in TaskRegistry:
    _register_builtin()
