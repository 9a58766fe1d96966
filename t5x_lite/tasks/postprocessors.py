"""T5 postprocessors: decoded text -> the value a metric compares.

Signature (seqio's): ``fn(text: str, example: dict | None = None, is_target: bool = False)``.
The evaluator calls it on each decoded prediction (is_target=False) and on each
target text (is_target=True, with the raw example so fields such as SQuAD's
full answer list or a MultiRC group id can be used).

Classification: the label word becomes its class index; anything else becomes
-1, which never equals a real class, so an invalid output counts as wrong.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

PostprocessFn = Callable[..., object]


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO" and value.ndim == 0:
        return _text(value.item())
    return str(value)


def identity(text, example=None, is_target=False):
    return _text(text)


def string_label_to_class_id(text, label_classes: Sequence[str], default: int = -1) -> int:
    """'acceptable' -> 1 for ('unacceptable', 'acceptable'); unknown -> default (-1)."""
    text = _text(text).strip()
    try:
        return list(label_classes).index(text)
    except ValueError:
        return default


def make_label_postprocessor(label_classes: Sequence[str]) -> PostprocessFn:
    """A postprocess_fn mapping label words to class ids (T5 `string_label_to_class_id`)."""
    classes = tuple(label_classes)

    def postprocess(text, example=None, is_target=False):
        return string_label_to_class_id(text, classes)

    postprocess.label_classes = classes
    return postprocess


def string_to_float(text, example=None, is_target=False, default: float = -1.0) -> float:
    """STS-B: '3.8' -> 3.8; unparsable output -> -1 (outside the 0..5 range)."""
    try:
        return float(_text(text).strip())
    except ValueError:
        return default


def lower_text(text, example=None, is_target=False) -> str:
    return _text(text).lower()


def squad_answers(text, example=None, is_target=False):
    """SQuAD: targets become the list of all reference answers, predictions stay text."""
    if is_target and example is not None and "answers" in example:
        answers = example["answers"]
        if isinstance(answers, dict):          # TFDS squad: {"text": [...], "answer_start": [...]}
            answers = answers["text"]
        return [_text(a) for a in np.asarray(answers, dtype=object).reshape(-1)]
    return _text(text)


def multirc_value(text, example=None, is_target=False):
    """MultiRC: {"group": question id, "value": 0/1 (or -1)} for grouped EM."""
    value = string_label_to_class_id(text, ("False", "True"))
    group = None
    if example is not None and "idx" in example:
        idx = example["idx"]
        if isinstance(idx, dict):               # TFDS super_glue/multirc idx: paragraph/question/answer
            group = (int(np.asarray(idx["paragraph"])), int(np.asarray(idx["question"])))
        else:
            group = int(np.asarray(idx).reshape(-1)[0])
    return {"group": group, "value": value}


def record_answers(text, example=None, is_target=False):
    """ReCoRD: targets become all correct entity strings (EM/F1 take the max)."""
    if is_target and example is not None and "answers" in example:
        return [_text(a) for a in np.asarray(example["answers"], dtype=object).reshape(-1)]
    return _text(text)


_WSC_DETERMINERS = frozenset(
    "a an few her his each every many much my our some that the their these this those which "
    "whose your".split())


def wsc_simple(text, example=None, is_target=False) -> int:
    """WSC (T5's "simple" form): the model names the referent of the marked pronoun.

    Target side: the example's 0/1 label (does the pronoun refer to span1?).
    Prediction side: 1 when the predicted noun phrase and the candidate referent
    (span1 text) agree after dropping determiners: one word set contains the
    other, and both or neither are possessive.
    """
    if is_target:
        return int(np.asarray(example["label"]))
    referent = example.get("targets_pretokenized", example.get("span1_text", ""))

    def clean(s):
        return [w for w in _text(s).strip().lower().split() if w not in _WSC_DETERMINERS]

    pred, ref = clean(text), clean(referent)
    if ("'" in " ".join(pred)) != ("'" in " ".join(ref)):
        return 0
    pred_set, ref_set = set(pred), set(ref)
    return int(pred_set <= ref_set or ref_set <= pred_set)
