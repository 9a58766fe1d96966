"""`eval` and `infer` for encoder classifiers (encoder_only models with num_classes > 0).

A classifier does not decode: it reads a task's examples in BERT's input format
(t5x_lite/data/classification.py: "<task>_cls", `[CLS] A [SEP] B [SEP]` + token types), takes the
argmax class of each, and maps the class id back to its label word.  From there it is the same path as
a text-to-text model's: the task's postprocessor and metric functions (evaluator.compute_metrics) on
the label words, the same predictions.jsonl / metrics.json, so both model families sit in one table.

infer: each JSONL line's "inputs" is a string (one segment), a list of two strings (segments A and B)
or a list of token ids used as they are; the output line adds "prediction" (the label word, from the
checkpoint's saved "class_labels"; class_<i> when it has none), "prediction_id" and "probabilities".
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import numpy as np

from t5x_lite import jsonio, partitioning
from t5x_lite.data import TaskRegistry, bert, classification
from t5x_lite.errors import UserError

_EXAMPLES: dict = {}   # (task, split, max examples, inputs length) -> examples, read once per process


def is_classifier(model_cfg) -> bool:
    return getattr(model_cfg, "architecture", None) == "encoder_only" and getattr(model_cfg, "num_classes", 0) > 0


def task_examples(task, split: str, max_examples: int | None, inputs_length: int) -> list[dict]:
    """The first max_examples examples of the task's classification view (cached)."""
    from t5x_lite.evaluation.evaluator import task_examples as read   # lazy: evaluator imports this module
    key = (task.name, split, max_examples, int(inputs_length))
    if key not in _EXAMPLES:
        cls_task = TaskRegistry.get(classification.classification_task(task.name))
        _EXAMPLES[key] = read(cls_task, split, max_examples, inputs_length)
    return _EXAMPLES[key]


def class_probabilities(model, token_rows: Sequence, type_rows: Sequence, *, batch_size: int = 32,
                        length: int | None = None, progress=False) -> np.ndarray:
    """Softmax over classes [N, num_classes] for unpacked rows, in fixed-shape batches (one compile)."""
    import jax   # lazy: keeps `t5x-lite infer --help` (which imports this module's caller) free of jax
    from flax import nnx   # lazy: as jax

    length = int(length or max(len(t) for t in token_rows))
    bs = max(1, min(int(batch_size), len(token_rows)))
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda st, b: jax.nn.softmax(nnx.merge(graphdef, st).classify(b), axis=-1))
    starts = range(0, len(token_rows), bs)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, total=-(-len(token_rows) // bs), unit="batch",
                      desc=progress if isinstance(progress, str) else "classify")
    out = []
    for start in starts:
        tokens = np.zeros((bs, length), np.int32)
        types = np.zeros((bs, length), np.int32)
        chunk = list(zip(token_rows[start:start + bs], type_rows[start:start + bs]))
        for r, (t, y) in enumerate(chunk):
            t = np.asarray(t, np.int32)[:length]
            tokens[r, :len(t)] = t
            types[r, :len(t)] = np.asarray(y, np.int32)[:len(t)]
        probs = fn(state, {"encoder_input_tokens": tokens, "encoder_token_type_ids": types})
        out.append(np.asarray(probs)[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, model.config.num_classes), np.float32)


def evaluate_task(model, task, *, split: str = "validation", max_examples: int | None = None,
                  examples: Sequence[dict] | None = None, inputs_length: int | None = None,
                  batch_size: int = 32, progress=False) -> tuple[list[dict], dict]:
    """(records, metrics) as evaluator.evaluate_task returns them, for an encoder classifier.
    `examples` (the evaluator's text-to-text ones) only set how many examples are read."""
    from t5x_lite.evaluation.evaluator import compute_metrics   # lazy: evaluator imports this module
    labels = classification.require_labels(task)
    if len(labels) != model.config.num_classes:
        raise UserError(f"task {task.name} has {len(labels)} labels but this classifier has "
                        f"{model.config.num_classes} classes")
    if examples is not None and (not examples or "class_label" not in examples[0]):
        max_examples = len(examples)
        examples = None
    length = int(inputs_length or 512)
    if model.config.position_embedding != "relative":   # learned/sinusoidal positions: no longer than trained
        length = min(length, int(model.config.max_position_embeddings))
    exs = list(examples) if examples is not None else task_examples(task, split, max_examples, length)
    probs = class_probabilities(model, [ex["inputs"] for ex in exs], [ex["token_type_ids"] for ex in exs],
                                batch_size=batch_size, length=min(length, max(len(ex["inputs"]) for ex in exs)),
                                progress=progress)
    predictions = [labels[int(i)] for i in np.argmax(probs, axis=-1)]
    metrics = compute_metrics(task, exs, predictions)
    records = [{"inputs": ex["inputs_pretokenized"], "targets": ex["targets_pretokenized"], "prediction": p}
               for ex, p in zip(exs, predictions)]
    return records, metrics


def _infer_inputs(rows: list[dict], vocab, length: int) -> tuple[list, list]:
    tokens, types = [], []
    for n, row in enumerate(rows, 1):
        x = row["inputs"]
        if isinstance(x, list) and x and all(isinstance(i, int) and not isinstance(i, bool) for i in x):
            t, y = np.asarray(x, np.int32), np.zeros(len(x), np.int32)
        elif isinstance(x, str) or (isinstance(x, list) and len(x) == 2 and all(isinstance(s, str) for s in x)):
            if vocab is None:
                raise UserError(f"line {n}: text inputs need a vocabulary, and the checkpoint has none "
                                "(pass --vocabulary or give token ids)")
            a, b = (x, None) if isinstance(x, str) else x
            t, y = bert.pack_pair(vocab.encode(a), None if b is None else vocab.encode(b), vocab, length)
        else:
            raise UserError(f'line {n}: a classifier\'s "inputs" must be a string, a list of two strings '
                            "(segments A and B) or a list of token ids")
        tokens.append(t[:length])
        types.append(y[:length])
    return tokens, types


def infer(loaded, rows: list[dict], output: str, *, batch_size: int = 32, progress: bool = True) -> int:
    """Write `output` (JSONL): each row plus prediction (label word), prediction_id, probabilities."""
    cfg = loaded.model_config
    labels = list(loaded.config.get("class_labels") or [f"class_{i}" for i in range(cfg.num_classes)])
    length = int(((loaded.config.get("data") or {}).get("feature_lengths") or {}).get("inputs") or 512)
    tokens, types = _infer_inputs(rows, loaded.vocabulary, length)
    bad = [i for t in tokens for i in t if not 0 <= int(i) < cfg.vocab_size]
    if bad:
        raise UserError(f"token id {bad[0]} out of range [0, {cfg.vocab_size})")
    with partitioning.activate(loaded.mesh):
        probs = class_probabilities(loaded.model, tokens, types, batch_size=batch_size,
                                    length=max(len(t) for t in tokens), progress=progress and "infer")
    lines = []
    for row, p in zip(rows, probs):
        k = int(np.argmax(p))
        out = dict(row, prediction=labels[k], prediction_id=k,
                   probabilities={label: round(float(q), 6) for label, q in zip(labels, p)})
        lines.append(jsonio.dumps(out, ensure_ascii=False) + "\n")
    if output == "-":   # stdout
        sys.stdout.writelines(lines)
        sys.stdout.flush()
        return 0
    with open(output + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(output + ".tmp", output)
    print(f"wrote {len(rows)} predictions to {output}")
    return 0
