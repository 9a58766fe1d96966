"""Classification data for encoder classifiers (an encoder_only model with num_classes > 0).

Every classification task of the registry is a text-to-text task whose targets are label words
(GLUE, SuperGLUE's label tasks, local_wordnet_lexname, local_debian_section, builtin_wordnet_pos, ...).
Its label set is its postprocessor's `label_classes` (postprocessors.make_label_postprocessor), so a
class id is simply the index of the target word in that tuple.

`classification_task(name)` registers (once) "<name>_cls": the same source, the task's own text
formatter, then BERT's input format (t5x_lite/data/bert.py): `[CLS] A [SEP] B [SEP]` with token types
0/1 when the task is a sentence pair (PAIR_FIELDS: which raw fields are A and B), else
`[CLS] <the task's text-to-text inputs> [SEP]`; inputs are truncated longest-first to
feature_lengths["inputs"].  Its examples keep the text-to-text targets ("targets_pretokenized" is the
label word), so `t5x-lite eval` scores a classifier with the task's own postprocessor and metrics
(t5x_lite/evaluation/classify.py).  A target that is not a label (unlabeled test splits: "<unk>")
gets class_label -1 and no loss.

`ClassifierFeatureConverter` (data architecture "encoder_classifier") turns them into
encoder_input_tokens, encoder_token_type_ids, encoder_class_labels (the label on every token of its
packed example; the objective reads it at the example's first position), encoder_segment_ids and
encoder_positions; packing works as for every other converter.
"""

from __future__ import annotations

import numpy as np

from t5x_lite.data import bert
from t5x_lite.data.feature_converters import FeatureConverter, _trim
from t5x_lite.data.preprocessors import Context
from t5x_lite.data.tasks import Mixture, Task, TaskRegistry, get_task_or_mixture
from t5x_lite.data.vocabularies import EOS_ID
from t5x_lite.errors import UserError

SUFFIX = "_cls"
CLASSIFIER = "encoder_classifier"   # the data architecture (feature_converters.get_feature_converter)

# Sentence-pair tasks: the raw fields that are segment A and B (BERT's GLUE pairing; SuperGLUE's
# three-field WiC puts the word after sentence 2).  Tasks not listed are one segment: their
# text-to-text inputs.
PAIR_FIELDS = {
    "glue_mrpc_v002": ("sentence1", "sentence2"),
    "glue_qqp_v002": ("question1", "question2"),
    "glue_mnli_v002": ("premise", "hypothesis"),
    "glue_mnli_matched_v002": ("premise", "hypothesis"),
    "glue_mnli_mismatched_v002": ("premise", "hypothesis"),
    "glue_qnli_v002": ("question", "sentence"),
    "glue_rte_v002": ("sentence1", "sentence2"),
    "glue_wnli_v002": ("sentence1", "sentence2"),
    "super_glue_rte_v102": ("premise", "hypothesis"),
    "super_glue_cb_v102": ("premise", "hypothesis"),
    "super_glue_boolq_v102": ("question", "passage"),
    "super_glue_wic_v102": ("sentence1", "sentence2", "word"),
    "local_debian_section": ("synopsis", "description"),
}
SINGLE_FIELD = {"glue_cola_v002": "sentence", "glue_sst2_v002": "sentence", "local_wordnet_lexname": "gloss"}


def task_labels(task) -> tuple[str, ...] | None:
    """The label words of a classification task (its postprocessor's label_classes), else None."""
    labels = getattr(getattr(task, "postprocess_fn", None), "label_classes", None)
    return tuple(str(x) for x in labels) if labels else None


def require_labels(task) -> tuple[str, ...]:
    labels = task_labels(task)
    if labels is None:
        raise UserError(f"task {task.name} is not a classification task (its postprocessor has no label set); "
                        "an encoder classifier (model.num_classes > 0) needs one, e.g. local_wordnet_lexname")
    return labels


def base_name(name: str) -> str:
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name


def _text(value) -> str:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _classify_example(text_fns, labels, fields, single):
    """Raw row -> the task's text-to-text example -> + BERT inputs, token types and the class id."""
    def _fmt(ex: dict, ctx: Context) -> dict | None:
        raw = dict(ex)
        for fn in text_fns:
            ex = fn(ex, ctx)
            if ex is None:
                return None
        vocab = ctx.vocab("inputs")
        target = _text(ex["targets"])
        encode = lambda key: vocab.encode(_text(raw[key]))
        if fields and all(k in raw for k in fields):
            a, b = encode(fields[0]), [i for k in fields[1:] for i in encode(k)]
        else:
            a, b = (encode(single) if single in raw else vocab.encode(_text(ex["inputs"]))), None
        tokens, types = bert.pack_pair(a, b, vocab, ctx.length("inputs"))
        out = {k: v for k, v in ex.items() if k not in ("inputs", "targets")}   # idx, label, ...: for metrics
        out.update(inputs=tokens, token_type_ids=types, class_label=np.int32(labels.index(target) if target in labels
                                                                             else -1),
                   targets=np.asarray(vocab.encode(target) + [EOS_ID], np.int32),
                   inputs_pretokenized=_text(ex["inputs"]), targets_pretokenized=target)
        return out
    _fmt.__name__ = "bert_classification_inputs"
    return _fmt


def classification_task(name: str) -> str:
    """Register (once) and return "<name>_cls", the BERT-format classification view of task `name`."""
    base_task = base_name(name)
    new = base_task + SUFFIX
    if new in TaskRegistry:
        return new
    base = get_task_or_mixture(base_task)
    if isinstance(base, Mixture):
        raise UserError(f"{base_task} is a mixture; an encoder classifier fine-tunes on one task (one label set)")
    labels = require_labels(base)
    names = [getattr(p, "__name__", "") for p in base.preprocessors]
    if "tokenize" not in names:
        raise UserError(f"task {base_task} has no tokenize step; cannot derive its classification inputs")
    text_fns = base.preprocessors[: names.index("tokenize")]
    step = _classify_example(text_fns, labels, PAIR_FIELDS.get(base_task), SINGLE_FIELD.get(base_task))
    TaskRegistry.add(Task(new, base.source, [step], base.output_features, metric_fns=base.metric_fns,
                          postprocess_fn=base.postprocess_fn,
                          description=f"{base_task} as {len(labels)}-way classification in BERT's input format"))
    return new


def pipeline_task(task_name: str, model_cfg) -> tuple[str, str]:
    """(task, data architecture) the trainer's pipeline reads for a model: an encoder classifier reads
    classification_task(task) with the "encoder_classifier" converter; every other model its task as is."""
    if model_cfg.architecture == "encoder_only" and model_cfg.num_classes > 0:
        return classification_task(task_name), CLASSIFIER
    return task_name, model_cfg.architecture


class ClassifierFeatureConverter(FeatureConverter):
    """Classification examples (`classification_task`) -> encoder classifier batches (module docstring)."""
    name = "encoder_classifier"

    def __init__(self, feature_lengths, trim=True):
        super().__init__(feature_lengths, trim)
        self.stacks = {"encoder": self._need("inputs")}

    def prepare(self, ex):
        if "class_label" not in ex:
            raise UserError("an encoder classifier (model.num_classes > 0) trains on classification examples "
                            f"(a *{SUFFIX} task, data/classification.py); this example has only {sorted(ex)}")
        tokens = _trim(self._tokens(ex, "inputs"), self.stacks["encoder"], "inputs", self.trim)
        if len(tokens) == 0:
            return None
        types = np.asarray(ex.get("token_type_ids", np.zeros(len(tokens))), np.int32)[:len(tokens)]
        return {"encoder": {"tokens": tokens, "types": types,
                            "label": np.full(len(tokens), int(ex["class_label"]), np.int32)}}

    def finalize(self, rows):
        enc = rows["encoder"]
        return {"encoder_input_tokens": enc["tokens"], "encoder_token_type_ids": enc["types"],
                "encoder_class_labels": enc["label"], "encoder_segment_ids": enc["segment_ids"],
                "encoder_positions": enc["positions"]}
