"""Fine-tuning an encoder from a pretraining checkpoint: which params carry over, and the classifier's labels.

`load_init_params` is the trainer's init_checkpoint step (train/loop.py).  A checkpoint whose params
are exactly the model's loads as before (loading.load_params, straight onto the shardings).  Otherwise:

  * every param the model has with the same path and shape is loaded;
  * checkpoint params the model does not have are DROPPED: pretraining-only heads -- the MLM output
    (encoder/logits_dense), BERT's nsp_head, an ELECTRA checkpoint's generator/... and rtd_head/...
    (its discriminator sits at the top level with EncoderOnly's names), a T5 checkpoint's decoder;
  * the model's new heads are FRESHLY INITIALISED (the trainer's seeded init): FRESH_HEADS, i.e. the
    classifier (also when the checkpoint's has another number of classes), BERT's pooler when the
    checkpoint has none (an MLM-only or ELECTRA checkpoint) and token type embeddings the checkpoint
    lacks;
  * anything else missing or of another shape is the one-line "holds a different model" error.

One log line lists what was dropped and what was freshly initialised.

`adapt_model_section` is applied by config.resolve to the model section taken from an init_checkpoint:
a classifier (num_classes > 0) has no NSP head (nsp_head=True would otherwise survive from a BERT
checkpoint, since a key left at its default is not a change).  `classifier_entries` puts the label
words of the training task into the resolved config saved with every checkpoint ("class_labels"), so
eval and infer print label names.
"""

from __future__ import annotations

import jax
import numpy as np

from t5x_lite import checkpoints, loading
from t5x_lite.data import classification, get_task_or_mixture
from t5x_lite.errors import UserError

FRESH_HEADS = ("classifier", "pooler", "token_type_embedder")


def adapt_model_section(model: dict) -> dict:
    """The init_checkpoint model section as the fine-tuned model needs it (module docstring)."""
    if int(model.get("num_classes", 0)) > 0 and model.get("nsp_head"):
        model = {**model, "nsp_head": False}
    return model


def classifier_entries(model_cfg, task_name: str) -> dict:
    """{"class_labels": [...]} for an encoder classifier (checked against num_classes), else {}."""
    if model_cfg.architecture != "encoder_only" or model_cfg.num_classes <= 0:
        return {}
    labels = classification.require_labels(get_task_or_mixture(classification.base_name(task_name)))
    if len(labels) != model_cfg.num_classes:
        raise UserError(f"task {task_name} has {len(labels)} labels but model.num_classes={model_cfg.num_classes}; "
                        f"set --config.model.num_classes={len(labels)}")
    return {"class_labels": list(labels)}


def _plan(have: dict, want: dict) -> tuple[list, list, list]:
    """(loaded, dropped, fresh) path tuples; UserError for a difference outside FRESH_HEADS."""
    dropped = sorted(k for k in have if k not in want)
    fresh, bad = [], []
    for k in sorted(want):
        same = k in have and tuple(have[k].shape) == tuple(want[k].shape)
        if not same:
            (fresh if k[0] in FRESH_HEADS else bad).append(k)
    if bad:
        k = bad[0]
        why = "is missing" if k not in have else f"has shape {list(have[k].shape)}, expected {list(want[k].shape)}"
        raise UserError(f"init_checkpoint holds a different model: param {'/'.join(k)} {why}"
                        + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    loaded = [k for k in sorted(want) if k not in fresh]
    return loaded, dropped, fresh


def _groups(paths) -> str:
    """Paths summarised by their top-level module (encoder/logits_dense kept whole)."""
    names = []
    for k in paths:
        name = "/".join(k[:2]) if k[0] == "encoder" else k[0]
        if name not in names:
            names.append(name)
    return ", ".join(names) if names else "nothing"


def load_init_params(path: str, target: dict, fresh_params: dict) -> tuple[dict, str]:
    """(params, log line).  target: the model's params as ShapeDtypeStructs with shardings;
    fresh_params: the freshly initialised params (the new heads are taken from them)."""
    ck = loading.open_checkpoint(path)
    have = loading.flatten_params(loading.abstract_params(ck.model_config))
    want = loading.flatten_params(target)
    loaded, dropped, fresh = _plan(have, want)
    if not dropped and not fresh:
        return loading.load_params(path, target), f"initialised params from {path}"
    host = loading.flatten_params(checkpoints.restore_params(ck.directory, ck.step))
    fresh_flat = loading.flatten_params(fresh_params)
    out: dict = {}
    for k, sds in want.items():
        if k in fresh:   # already on its sharding when it comes from the trainer's init
            value = jax.device_put(fresh_flat[k], sds.sharding)
        else:
            arr = np.asarray(host[k]).astype(sds.dtype)
            value = jax.make_array_from_callback(arr.shape, sds.sharding, lambda idx, a=arr: a[idx])
        node = out
        for part in k[:-1]:
            node = node.setdefault(part, {})
        node[k[-1]] = value
    line = (f"initialised params from {path} step {ck.step}: loaded {len(loaded)} arrays; dropped "
            f"{_groups(dropped)} (not in this model); freshly initialised {_groups(fresh)}")
    return out, line
