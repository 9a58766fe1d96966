"""T5's downstream tasks (Raffel et al. 2020, Sec. 2.3) under T5's names, over TFDS sources.

Read from the TFDS data dir (make_pipeline's / `data inspect --data-dir`'s data_dir, else $TFDS_DATA_DIR,
else ~/tensorflow_datasets): GLUE, SuperGLUE, CNN/DM and SQuAD from Hugging Face's parquet files when
they are there (a clone of nyu-mll/glue in DIR/glue, of aps/super_glue in DIR/super_glue, ...; see
docs/data.md), else from TFDS array_record; WMT from TFDS only.  t5x_lite never downloads them.
The vocabulary is "builtin", or T5's SentencePiece model when $T5X_LITE_T5_VOCAB names it
(t5_vocabulary(); set it to fine-tune a converted T5 checkpoint on these tasks).  Text-to-text
formats follow T5's preprocessors: a task prefix, then "feature: value" pairs (GLUE's
features in sorted order unless T5 lists them), and the label word as the target, e.g.
    cola sentence: Our friends won't buy this analysis.        -> acceptable
    mnli hypothesis: ... premise: ...                          -> entailment
    stsb sentence1: ... sentence2: ...                         -> 3.8   (21 classes, steps of 0.2)
    translate English to German: That is good.                 -> Das ist gut.
    summarize: <article>                                       -> <highlights>
    question: <question> context: <context>                    -> <first answer>
Metrics and postprocessors are T5's (metrics.py, postprocessors.py); an invalid label counts as wrong.

Simplified against T5 (see docs/downstream.md): ReCoRD makes one example per query (target =
first answer, metric = max over all answers) instead of one per answer; WSC uses T5's "simple"
format (super_glue_wsc_v102_simple_train/_eval) and super_glue_wsc_v102 combines both.
"""

from __future__ import annotations

import os
import re
import unicodedata
from typing import Sequence

import numpy as np

from t5x_lite.data import preprocessors as pp
from t5x_lite.data.preprocessors import Feature
from t5x_lite.data.file_sources import FilesOrTfdsSource
from t5x_lite.data.sources import TfdsSource
from t5x_lite.data.tasks import Mixture, MixtureRegistry, Task, TaskRegistry
from t5x_lite.data.vocabularies import get_vocabulary
from t5x_lite.errors import UserError
from t5x_lite.tasks import metrics as M
from t5x_lite.tasks import postprocessors as P

LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "ro": "Romanian"}
T5_VOCAB_ENV = "T5X_LITE_T5_VOCAB"


def t5_vocabulary():
    """The vocabulary of the tasks under T5's names (C4, GLUE, SuperGLUE, ...): $T5X_LITE_T5_VOCAB, a path
    to a SentencePiece model (T5's cc_all.32000.100extra spiece.model: 32000 pieces + 100 extra ids) or a
    vocabulary spec, else "builtin".  Read when t5x_lite.tasks is imported."""
    value = os.environ.get(T5_VOCAB_ENV, "").strip()
    if not value:
        return get_vocabulary("builtin")
    spec = value if value == "builtin" or value.startswith(("spm:", "byte")) else "spm:" + value
    try:
        return get_vocabulary(spec)
    except UserError as e:
        raise UserError(f"${T5_VOCAB_ENV}={value}: {e}") from None


def hf_or_tfds(name: str, splits, split_map=None, subdir: str | None = None) -> FilesOrTfdsSource:
    """TFDS `name`, or its Hugging Face parquet files in <TFDS data dir>/<subdir> (default: name without
    the version, e.g. glue/cola) when they are there."""
    return FilesOrTfdsSource(name, splits=splits, split_map=split_map, layout="hf_parquet", subdir=subdir)


def _s(value) -> str:
    """A TFDS text value (bytes, str or 0-d array) as str."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _with_idx(ex: dict, out: dict) -> dict:
    """Keep the example's idx (MultiRC groups, ReCoRD de-duplication) when it has one."""
    if "idx" in ex:
        out["idx"] = ex["idx"]
    return out


def _label(value) -> int:
    return int(np.asarray(value).reshape(-1)[0])


# ----------------------------------------------------------------------------
# Text-to-text formats (example, ctx) -> {"inputs": str, "targets": str, + fields for postprocessing}
# ----------------------------------------------------------------------------

def glue_text(benchmark: str, label_names: Sequence[str], feature_names: Sequence[str] | None = None):
    """T5's `glue`: "<benchmark> <feat>: <value> ..." -> label word ("<unk>" for unlabeled -1)."""
    label_names = tuple(label_names)

    def fmt(ex, ctx):
        keys = feature_names or sorted(k for k in ex if k not in ("label", "idx"))
        text = " ".join([benchmark] + [f"{k}: {_s(ex[k])}" for k in keys])
        if benchmark == "multirc":     # MultiRC paragraphs carry <br> and <b> markup
            text = re.sub(r"<(/)?b>", "", re.sub(r"<br>", " ", text))
        label = _label(ex["label"]) if "label" in ex else -1
        return _with_idx(ex, {"inputs": text, "targets": label_names[label] if label >= 0 else "<unk>",
                              "label": label})

    fmt.__name__ = f"glue_text({benchmark})"
    return fmt


def stsb_text(ex, ctx):
    """STS-B as 21 classes: the 0-5 score rounded to steps of 0.2, written with one decimal."""
    label = float(np.asarray(ex["label"]).reshape(-1)[0])
    return _with_idx(ex, {"inputs": f"stsb sentence1: {_s(ex['sentence1'])} sentence2: {_s(ex['sentence2'])}",
                          "targets": f"{np.round(label * 5) / 5:.1f}"})


def pad_punctuation(text: str) -> str:
    """T5's SQuAD tokenisation: spaces around every char that is not a letter, digit, mark,
    underscore or space; whitespace collapsed."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == "_" or ch.isspace() or cat[0] in "LNM":
            out.append(ch)
        else:
            out.append(f" {ch} ")
    return " ".join("".join(out).split())


def squad_text(ex, ctx):
    """T5's `squad`: "question: <q> context: <c>" -> first answer; all answers kept for EM/F1."""
    answers = ex["answers"]
    texts = answers["text"] if isinstance(answers, dict) else answers
    texts = [pad_punctuation(_s(a)) for a in np.asarray(texts, dtype=object).reshape(-1)]
    return {"inputs": f"question: {pad_punctuation(_s(ex['question']))} "
                      f"context: {pad_punctuation(_s(ex['context']))}",
            "targets": texts[0] if texts else "", "answers": texts}


def translate_text(source: str, target: str):
    prefix = f"translate {LANGUAGE_NAMES[source]} to {LANGUAGE_NAMES[target]}: "

    def fmt(ex, ctx):
        return {"inputs": prefix + _s(ex[source]), "targets": _s(ex[target])}

    fmt.__name__ = f"translate({source}->{target})"
    return fmt


def summarize_text(article_key: str, summary_key: str):
    def fmt(ex, ctx):
        return {"inputs": "summarize: " + _s(ex[article_key]), "targets": _s(ex[summary_key])}

    fmt.__name__ = f"summarize({article_key}->{summary_key})"
    return fmt


def record_text(ex, ctx):
    """ReCoRD: "record query: <query> entities: <e1>, <e2> passage: <passage>" -> an answer entity.
    @highlight markers become sentence breaks, as in T5."""
    passage = _s(ex["passage"])
    passage = re.sub(r"([.?!\"'])\n@highlight\n", r"\1 ", passage)
    passage = re.sub(r"\n@highlight\n", ". ", passage)
    entities = list(dict.fromkeys(_s(e) for e in np.asarray(ex["entities"], dtype=object).reshape(-1)))
    answers = [_s(a) for a in np.asarray(ex["answers"], dtype=object).reshape(-1)]
    return _with_idx(ex, {"inputs": f"record query: {_s(ex['query'])} entities: {', '.join(entities)} "
                                    f"passage: {passage}",
                          "targets": answers[0] if answers else "<unk>", "answers": answers})


def mark_span(text: str, start_word: int, span: str, mark: str = "*") -> str:
    """Surround the words of `span` starting at word index `start_word` with `mark`."""
    words = text.split(" ")
    n = len(span.split(" "))
    return " ".join(words[:start_word] + [mark] + words[start_word:start_word + n] + [mark]
                    + words[start_word + n:])


def wsc_text(correct_referent_only_on_train: bool = True):
    """T5's `wsc_simple`: "wsc: <text with the pronoun marked *they*>" -> the candidate referent.
    In training only examples whose candidate is the true referent are kept."""
    def fmt(ex, ctx):
        label = _label(ex["label"])
        if correct_referent_only_on_train and ctx.split == "train" and label != 1:
            return None
        text = mark_span(_s(ex["text"]), _label(ex["span2_index"]), _s(ex["span2_text"]))
        return _with_idx(ex, {"inputs": "wsc: " + text, "targets": _s(ex["span1_text"]), "label": label})

    fmt.__name__ = "wsc_simple"
    return fmt


# ----------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------

def text_task(name: str, source, formatter, metric_fns, postprocess_fn=P.identity, *,
              vocabulary="builtin", description: str = "") -> Task:
    vocab = get_vocabulary(vocabulary) if isinstance(vocabulary, str) else vocabulary
    return Task(name, source, [formatter, pp.tokenize, pp.append_eos_after_trim],
                {"inputs": Feature(vocab), "targets": Feature(vocab)},
                metric_fns=metric_fns, postprocess_fn=postprocess_fn, description=description)


GLUE = {  # config: (label names, metrics)
    "cola": (("unacceptable", "acceptable"), [M.matthews_corrcoef]),
    "sst2": (("negative", "positive"), [M.accuracy]),
    "mrpc": (("not_equivalent", "equivalent"), [M.f1_binary, M.accuracy]),
    "qqp": (("not_duplicate", "duplicate"), [M.f1_binary, M.accuracy]),
    "mnli": (("entailment", "neutral", "contradiction"), [M.accuracy]),
    "qnli": (("entailment", "not_entailment"), [M.accuracy]),
    "rte": (("entailment", "not_entailment"), [M.accuracy]),
    "wnli": (("not_entailment", "entailment"), [M.accuracy]),
}

SUPER_GLUE = {  # config: (label names, feature names or None for sorted, metrics)
    "boolq": (("False", "True"), None, [M.accuracy]),
    "cb": (("entailment", "contradiction", "neutral"), None, [M.mean_multiclass_f1(3), M.accuracy]),
    "copa": (("choice1", "choice2"), None, [M.accuracy]),
    "multirc": (("False", "True"), ("question", "answer", "paragraph"), [M.multirc_f1_and_em]),
    "rte": (("entailment", "not_entailment"), None, [M.accuracy]),
    "wic": (("False", "True"), ("sentence1", "sentence2", "word"), [M.accuracy]),
}

# T5's proportional mixing rates (training examples per task).
GLUE_RATES = {"glue_cola_v002": 8551, "glue_sst2_v002": 67349, "glue_mrpc_v002": 3668,
              "glue_qqp_v002": 363849, "glue_stsb_v002": 5749, "glue_mnli_v002": 392702,
              "glue_qnli_v002": 104743, "glue_rte_v002": 2490}
SUPER_GLUE_RATES = {"super_glue_wsc_v102_simple_train": 259, "super_glue_boolq_v102": 9427,
                    "super_glue_cb_v102": 250, "super_glue_copa_v102": 400,
                    "super_glue_multirc_v102": 27243, "super_glue_record_v102": 138854,
                    "super_glue_rte_v102": 2490, "super_glue_wic_v102": 5428}


def _register() -> None:
    vocab = t5_vocabulary()

    def add(task_name, source, formatter, metric_fns, postprocess_fn=P.identity, description=""):
        TaskRegistry.add(text_task(task_name, source, formatter, metric_fns, postprocess_fn, vocabulary=vocab,
                                   description=description))

    for cfg, (labels, metric_fns) in GLUE.items():
        bench = "mnli" if cfg.startswith("mnli") else cfg
        src = hf_or_tfds(f"glue/{cfg}:2.0.0", ("train", "validation", "test"))
        if cfg == "mnli":
            src = hf_or_tfds("glue/mnli:2.0.0",
                             ("train", "validation", "validation_matched", "validation_mismatched"),
                             split_map={"validation": "validation_matched"})
        add(f"glue_{cfg}_v002", src, glue_text(bench, labels), metric_fns,
            P.make_label_postprocessor(labels), description=f"GLUE {cfg} (glue/{cfg}: HF parquet or TFDS 2.0.0)")
    for cfg in ("mnli_matched", "mnli_mismatched"):
        labels, metric_fns = GLUE["mnli"]
        add(f"glue_{cfg}_v002", hf_or_tfds(f"glue/{cfg}:2.0.0", ("validation", "test")),
            glue_text("mnli", labels), metric_fns, P.make_label_postprocessor(labels),
            description=f"GLUE MNLI {cfg.split('_')[1]} validation (eval only)")
    add("glue_stsb_v002", hf_or_tfds("glue/stsb:2.0.0", ("train", "validation", "test")),
        stsb_text, [M.pearson_corrcoef, M.spearman_corrcoef], P.string_to_float,
        description="GLUE STS-B as 21 classes (steps of 0.2)")

    for cfg, (labels, feats, metric_fns) in SUPER_GLUE.items():
        pp_fn = P.multirc_value if cfg == "multirc" else P.make_label_postprocessor(labels)
        add(f"super_glue_{cfg}_v102", hf_or_tfds(f"super_glue/{cfg}:1.0.2", ("train", "validation", "test")),
            glue_text(cfg, labels, feats), metric_fns, pp_fn,
            description=f"SuperGLUE {cfg} (super_glue/{cfg}: HF parquet or TFDS 1.0.2)")
    add("super_glue_record_v102", hf_or_tfds("super_glue/record:1.0.2", ("train", "validation", "test")),
        record_text, [M.record_em_and_f1], P.record_answers,
        description="SuperGLUE ReCoRD (one example per query; EM/F1 max over answers)")
    wsc = "super_glue/wsc.fixed:1.0.2"
    add("super_glue_wsc_v102_simple_train", hf_or_tfds(wsc, ("train",)),
        wsc_text(True), [], description="WSC simple format, correct referents only (training)")
    add("super_glue_wsc_v102_simple_eval", hf_or_tfds(wsc, ("validation", "test")),
        wsc_text(False), [M.accuracy], P.wsc_simple,
        description="WSC simple format, all candidates; prediction scored as referent match")
    add("super_glue_wsc_v102", hf_or_tfds(wsc, ("train", "validation", "test")),
        wsc_text(True), [M.accuracy], P.wsc_simple,
        description="WSC simple format: train = correct referents, validation = all candidates")

    add("cnn_dailymail_v002", hf_or_tfds("cnn_dailymail:3.4.0", ("train", "validation", "test"),
                                         subdir="cnn_dailymail/3.0.0"),
        summarize_text("article", "highlights"), [M.rouge],
        description="CNN/Daily Mail summarization; the paper reports ROUGE-2-F")
    add("squad_v010_allanswers", hf_or_tfds("squad/v1.1:3.0.0", ("train", "validation"), subdir="squad/plain_text"),
        squad_text, [M.squad], P.squad_answers,
        description="SQuAD v1.1; EM/F1 max over all answers (the paper reports EM)")
    for name, tfds_name, tgt in (("wmt_t2t_ende_v003", "wmt_t2t_translate/de-en:1.0.0", "de"),
                                 ("wmt15_enfr_v003", "wmt15_translate/fr-en:1.0.0", "fr"),
                                 ("wmt16_enro_v003", "wmt16_translate/ro-en:1.0.0", "ro")):
        add(name, TfdsSource(tfds_name, splits=("train", "validation", "test")), translate_text("en", tgt),
            [M.bleu], description=f"WMT English to {LANGUAGE_NAMES[tgt]}; SacreBLEU (intl, exp)")

    MixtureRegistry.add(Mixture("glue_v002_proportional", list(GLUE_RATES.items()),
                                description="GLUE (no WNLI), rates = training set sizes (T5)"))
    MixtureRegistry.add(Mixture("super_glue_v102_proportional", list(SUPER_GLUE_RATES.items()),
                                description="SuperGLUE (WSC simple, no DPR), rates = training set sizes"))


if "glue_cola_v002" not in TaskRegistry:
    _register()
