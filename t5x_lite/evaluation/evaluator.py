"""Decode-based evaluation: model -> predictions -> the task's postprocessor and metrics.

Used by `t5x-lite eval` (evaluation/cli.py) and, through `make_train_evaluators`, by the trainer
for periodic validation: each evaluator is a callable (step, model) -> {metric name: float}.
Callers run these functions inside `partitioning.activate(mesh)` of the mesh the model's params
live on (t5x_lite.loading.load_model gives one).

Flow for one task (as seqio's Evaluator, without TensorFlow):
  1. the first N examples of a split, in order (no shuffling), after the task's preprocessors;
  2. prompts from their `inputs` ids (decoder-only: "<inputs> target:" as in the T5 paper's
     decoder-only fine-tuning, see `lm_format_task`), batched at fixed shapes (one compile);
  3. greedy / beam decoding with the KV cache (t5x_lite.decoding);
  4. text = the targets vocabulary's decode (stops at EOS);
  5. postprocess_fn(prediction, example=ex, is_target=False) and
     postprocess_fn(target text, example=ex, is_target=True); then every metric_fn(targets, predictions).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Any, Callable, Iterable, Sequence

import numpy as np

import t5x_lite.tasks  # noqa: F401  (registers the built-in tasks the evaluator looks up by name)
from t5x_lite import data, decoding, jsonio
from t5x_lite.evaluation import classify
from t5x_lite.errors import UserError, ensure_dir

# T5 paper, decoder-only fine-tuning: "translate English to German: That is good. target: Das ist gut."
LM_TARGET_MARKER = "target:"
LM_FORMAT_SUFFIX = "_lm_format"


@dataclasses.dataclass
class DecodeSettings:
    method: str = "greedy"          # greedy | beam | sample
    beam_size: int = 4
    alpha: float = 0.6              # T5X brevity penalty for beam search
    max_decode_length: int | None = None   # None: the longest target among the evaluated examples
    batch_size: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    finish_rule: str = "t5x"        # beam bookkeeping: t5x | hf (see decoding.beam_search)

    def validate(self) -> "DecodeSettings":
        if self.method not in decoding.METHODS:
            raise UserError(f"decode method must be one of {decoding.METHODS}, got {self.method!r}")
        if self.beam_size < 1 or self.batch_size < 1:
            raise UserError(f"beam size and batch size must be >= 1, got {self.beam_size}, {self.batch_size}")
        if self.max_decode_length is not None and self.max_decode_length < 1:
            raise UserError(f"max decode length must be >= 1, got {self.max_decode_length}")
        return self


# ----------------------------------------------------------------------------------------------
# Tasks and examples
# ----------------------------------------------------------------------------------------------

def lm_target_marker(marker: str = LM_TARGET_MARKER):
    """Text preprocessor: inputs -> "<inputs> target:" (before tokenization)."""
    def _mark(ex, ctx):
        out = dict(ex)
        text = ex.get("inputs")
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if isinstance(text, str):
            out["inputs"] = f"{text} {marker}".strip()
        return out
    _mark.__name__ = f"lm_target_marker({marker!r})"
    return _mark


def lm_format_task(name: str) -> str:
    """Register (once) and return the name of `name` + "_lm_format": the same task with
    " target:" appended to its inputs text, the T5 paper's format for decoder-only and
    prefix-LM fine-tuning ("inputs target: targets" after the feature converter's concatenation;
    at inference the prompt is the inputs up to "target:")."""
    new = name + LM_FORMAT_SUFFIX
    if new in data.TaskRegistry.names():
        return new
    base = data.TaskRegistry.get(name)
    pre = list(base.preprocessors)
    # Insert before tokenization: the marker is text.
    idx = next((i for i, p in enumerate(pre) if getattr(p, "__name__", "") == "tokenize"), 0)
    pre.insert(idx, lm_target_marker())
    # No EOS after the inputs: the concatenation is "<inputs> target: <targets> EOS", the paper's text.
    features = dict(base.output_features)
    if "inputs" in features:
        features["inputs"] = dataclasses.replace(features["inputs"], add_eos=False)
    data.TaskRegistry.add(data.Task(new, source=base.source, preprocessors=pre, output_features=features,
                                    metric_fns=base.metric_fns, postprocess_fn=base.postprocess_fn,
                                    description=f"{base.name} in the T5 paper's decoder-only format "
                                                f"'<inputs> {LM_TARGET_MARKER} <targets>'"))
    return new


def resolve_tasks(names: str | Sequence[str]) -> list:
    """Task objects for a comma list of task or mixture names (a mixture expands to its tasks)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise UserError("no task given")
    tasks = []
    for name in names:
        if name.endswith(LM_FORMAT_SUFFIX) and name not in data.TaskRegistry.names():
            lm_format_task(name[: -len(LM_FORMAT_SUFFIX)])
        obj = data.get_task_or_mixture(name)
        if isinstance(obj, data.Mixture):   # evaluated task by task, as seqio does
            tasks.extend(t for t, _ in obj.tasks_and_rates)
        else:
            tasks.append(obj)
    return tasks


def task_examples(task, split: str, max_examples: int | None, inputs_length: int | None = None) -> list[dict]:
    """The first `max_examples` preprocessed examples of a split, in order; inputs trimmed to
    `inputs_length` tokens (EOS kept) as the task's trimming preprocessor does in training."""
    out = []
    if split not in task.splits:
        raise UserError(f"task {task.name} has no split {split!r} (it has {', '.join(task.splits)})")
    lengths = {"inputs": int(inputs_length)} if inputs_length else None
    try:
        it = task.get_examples(split, seed=0, shuffle=False, feature_lengths=lengths)
        for ex in it:
            if "targets" not in ex:
                raise UserError(f"task {task.name} has no targets to evaluate against")
            out.append(ex)
            if max_examples is not None and len(out) >= max_examples:
                break
    except UserError:
        raise
    except (KeyError, FileNotFoundError, ValueError) as e:
        raise UserError(f"cannot read split {split!r} of task {task.name}: {e}") from None
    if not out:
        raise UserError(f"split {split!r} of task {task.name} is empty")
    return out


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return _text(value.item())
    return str(value)


def feature_text(ex: dict, name: str, vocab) -> str:
    """The example's raw text for a feature (`<name>_pretokenized`), else its decoded ids."""
    raw = ex.get(f"{name}_pretokenized")
    if raw is not None:
        return _text(raw)
    ids = ex.get(name)
    return vocab.decode([int(i) for i in np.asarray(ids).ravel()]) if ids is not None else ""


def _strip_eos(ids) -> list[int]:
    ids = [int(i) for i in np.asarray(ids).ravel()]
    while ids and ids[-1] in (decoding.EOS_ID, decoding.PAD_ID):
        ids.pop()
    return ids


def prompt_ids(ex: dict) -> list[int]:
    """The inputs ids exactly as the task made them (EOS included when the task adds it): the
    encoder's input, or for decoder-only models the prefix that the PrefixLM feature converter
    puts before the targets (inputs ++ targets), so the prompt matches training."""
    return [int(i) for i in np.asarray(ex.get("inputs", np.zeros((0,), np.int32))).ravel()]


# ----------------------------------------------------------------------------------------------
# Predicting and scoring
# ----------------------------------------------------------------------------------------------

def predict(model, prompts: Sequence[Sequence[int]], settings: DecodeSettings, *, max_decode_length: int,
            progress: bool | str = False) -> list[list[int]]:
    """Decode every prompt; returns the generated ids up to and including EOS (no padding).
    Batches have a fixed shape (last batch padded with empty rows), so there is one compile."""
    import jax

    settings.validate()
    arch = model.config.architecture
    length = max([len(p) for p in prompts] + [1])
    fits = decoding.fit_decode_length(model.config, length, max_decode_length)
    if fits < max_decode_length:   # as Hugging Face's generate: warn and stop at the model's length
        print(f"warning: decoding at most {fits} new tokens, not {max_decode_length}: a {length}-token prompt "
              f"leaves only {fits} of model.max_position_embeddings={model.config.max_position_embeddings} "
              "learned positions", file=sys.stderr)
        max_decode_length = fits
    bs = min(settings.batch_size, len(prompts)) or 1
    batches = range(0, len(prompts), bs)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, total=math.ceil(len(prompts) / bs), unit="batch",
                       desc=progress if isinstance(progress, str) else "decode")
    rng = jax.random.key(settings.seed)
    out: list[list[int]] = []
    for n, start in enumerate(batches):
        chunk = prompts[start:start + bs]
        prompt = decoding.make_prompt(arch, chunk, length=length, batch_size=bs)
        tokens = decoding.decode(model, prompt, method=settings.method, max_decode_length=max_decode_length,
                                 beam_size=settings.beam_size, alpha=settings.alpha,
                                 temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
                                 rng=jax.random.fold_in(rng, n), finish_rule=settings.finish_rule)
        for row in tokens[: len(chunk)].tolist():
            # Up to and including EOS; a row that never ended keeps all its max_decode_length tokens.
            out.append(row[: row.index(decoding.EOS_ID) + 1] if decoding.EOS_ID in row else row)
    return out


def compute_metrics(task, examples: Sequence[dict], predictions: Sequence[str]) -> dict[str, float]:
    """The task's postprocess_fn on predictions and targets, then every metric_fn."""
    vocab = task.output_features["targets"].vocabulary
    post = getattr(task, "postprocess_fn", None) or (lambda text, example=None, is_target=False: text)
    targets = [post(feature_text(ex, "targets", vocab), example=ex, is_target=True) for ex in examples]
    preds = [post(p, example=ex, is_target=False) for p, ex in zip(predictions, examples)]
    metrics: dict[str, float] = {}
    for fn in getattr(task, "metric_fns", None) or ():
        metrics.update({k: float(v) for k, v in fn(targets, preds).items()})
    return metrics


def evaluate_task(model, task, *, split: str = "validation", max_examples: int | None = None,
                  settings: DecodeSettings | None = None, examples: Sequence[dict] | None = None,
                  inputs_length: int | None = None,
                  prompts: Sequence[Sequence[int]] | None = None, progress: bool | str = False,
                  postprocess_prediction: Callable[[str], str] | None = None) -> tuple[list[dict], dict]:
    """Decode a task split and score it.  Returns (records, metrics); records are
    {inputs, targets, prediction} dicts (text, decoded with the task's vocabularies)."""
    settings = (settings or DecodeSettings()).validate()
    if classify.is_classifier(getattr(model, "config", None)):   # no decoding: argmax class -> label word
        return classify.evaluate_task(model, task, split=split, max_examples=max_examples, examples=examples,
                                      inputs_length=inputs_length, batch_size=settings.batch_size, progress=progress)
    if examples is None:
        examples = task_examples(task, split, max_examples, inputs_length)
    examples = list(examples)
    arch = model.config.architecture
    if arch not in ("encoder_decoder", "decoder_only"):
        raise UserError(f"cannot decode-evaluate a {arch} model")
    vocab_in = task.output_features.get("inputs", task.output_features["targets"]).vocabulary
    vocab_out = task.output_features["targets"].vocabulary
    vsize = model.config.vocab_size
    if vocab_out.vocab_size > vsize:
        raise UserError(f"task {task.name} vocabulary has {vocab_out.vocab_size} ids but the model only {vsize}")
    if prompts is None:
        prompts = [prompt_ids(ex) for ex in examples]
    max_len = settings.max_decode_length or max(len(_strip_eos(ex["targets"])) + 1 for ex in examples)
    pred_ids = predict(model, prompts, settings, max_decode_length=max_len, progress=progress)
    pred_text = [vocab_out.decode(p) for p in pred_ids]
    if postprocess_prediction is not None:
        pred_text = [postprocess_prediction(t) for t in pred_text]
    metrics = compute_metrics(task, examples, pred_text)
    records = [{"inputs": feature_text(ex, "inputs", vocab_in) if "inputs" in ex else "",
                "targets": feature_text(ex, "targets", vocab_out),
                "prediction": p}
               for ex, p in zip(examples, pred_text)]
    return records, metrics


def write_results(output_dir: str, task_name: str, records: Iterable[dict], metrics: dict, extra: dict | None = None):
    """OUTPUT/<task>/predictions.jsonl and metrics.json, each written whole (temporary file + rename);
    a non-finite metric is null, named under "nonfinite" (JSON has no NaN)."""
    d = ensure_dir(os.path.join(output_dir, task_name), "--output")
    for name, text in (("predictions.jsonl", "".join(jsonio.dumps(r, ensure_ascii=False) + "\n" for r in records)),
                       ("metrics.json", jsonio.dumps({**metrics, **(extra or {})}, indent=2, sort_keys=True) + "\n")):
        path = os.path.join(d, name)
        if os.path.isdir(path):
            raise UserError(f"cannot write {path}: it is a directory")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    return d


# ----------------------------------------------------------------------------------------------
# Periodic evaluation during training
# ----------------------------------------------------------------------------------------------

def make_train_evaluators(config) -> list[Callable[[int, Any], dict[str, float]]]:
    """One callable (step, model) -> {"<task>/<metric>": value} per task in config.evaluation.tasks
    (empty -> no evaluators).  Each decodes the first config.evaluation.num_examples examples of
    config.evaluation.split (empty: config.data.eval_split) with config.evaluation's decode
    settings (decode, beam_size, alpha, batch_size, max_decode_length), inputs trimmed to
    config.data.feature_lengths["inputs"] as in training, and returns the task's metrics.
    Examples are read once, on first use."""
    ev = config.evaluation
    if not list(ev.tasks):
        return []
    split = ev.split or config.data.eval_split
    settings = DecodeSettings(method=ev.decode, beam_size=int(ev.beam_size), alpha=float(ev.alpha),
                              batch_size=int(ev.batch_size), max_decode_length=ev.max_decode_length).validate()
    inputs_length = dict(config.data.feature_lengths).get("inputs")
    return [_TrainEvaluator(task, split, int(ev.num_examples), settings, inputs_length)
            for task in resolve_tasks(list(ev.tasks))]


class _TrainEvaluator:
    def __init__(self, task, split, num_examples, settings, inputs_length=None):
        self.task, self.split, self.num_examples, self.settings = task, split, num_examples, settings
        self.inputs_length = inputs_length
        self.name = task.name
        self._examples = None

    def __call__(self, step: int, model) -> dict[str, float]:
        if self._examples is None:
            self._examples = task_examples(self.task, self.split, self.num_examples, self.inputs_length)
        _, metrics = evaluate_task(model, self.task, settings=self.settings, examples=self._examples,
                                   inputs_length=self.inputs_length)
        return {f"{self.name}/{k}": v for k, v in metrics.items()}

    def __repr__(self):
        return f"TrainEvaluator({self.name}, split={self.split}, n={self.num_examples})"
