"""What BERT trains on (MLM + next-sentence prediction) and what an encoder classifier trains on.
Both return objectives.py's sums; the heads are models/bert.py's, read at every packed example's
first position (`example_starts`: positions == 0 on a real segment).

bert_sums (architecture encoder_only with nsp_head, num_classes 0).  BERT minimises

    L_BERT = mean over the batch's masked tokens of the MLM loss  +  mean over its examples of the NSP loss.

The train step divides loss_sum by weight_sum (W, the number of masked tokens) for the logged loss,
and for its gradient either keeps the sum ("sum") or divides by W ("mean").  So with N examples,

    loss_sum = MLM_sum + (W / N) * NSP_sum          (W / N is data: no gradient flows through it)
    loss_sum / W = MLM_sum / W + NSP_sum / N = L_BERT

i.e. "mean" normalisation trains exactly L_BERT and "sum" trains W * L_BERT: the two terms keep BERT's
relative weight either way.  (With gradient accumulation W / N is each microbatch's own ratio, so the
NSP term is a W-weighted mean of the microbatches' NSP means.)  The z-loss and label smoothing act on
the MLM softmax only.  weight_sum = W and correct_sum = correct MLM predictions (the step's "accuracy");
aux: mlm_loss and mlm_accuracy per masked token, nsp_loss and nsp_accuracy per example.

classification_sums (encoder_only with num_classes > 0, on encoder_classifier batches,
t5x_lite/data/classification.py).  Cross-entropy of the class logits at each example's first position
(examples whose label is -1, an unlabeled split, are skipped): loss_sum = its sum (+ z-loss),
correct_sum = right predictions, weight_sum = the number of examples, so the logged loss is the mean
cross-entropy and the step's accuracy the classification accuracy, also logged as aux class_accuracy
(eval/class_accuracy in eval).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from t5x_lite import models
from t5x_lite.errors import UserError
from t5x_lite.models import bert
from t5x_lite.models.layers import padding_or_segments
from t5x_lite.train import losses


def _starts(batch):
    tokens = batch["encoder_input_tokens"]
    seg = padding_or_segments(tokens, batch.get("encoder_segment_ids"))
    return bert.example_starts(seg, bert.positions_or_arange(tokens, batch.get("encoder_positions")))


def _example_sums(logits, labels, weights, z_loss, label_smoothing=0.0):
    """weighted_sums over the examples' first positions (labels -1 carry weight 0)."""
    return losses.weighted_sums(logits, jnp.maximum(labels, 0), weights, z_loss=z_loss,
                                label_smoothing=label_smoothing)


def bert_sums(model, batch, *, deterministic: bool, dropout_rng, z_loss: float, label_smoothing: float,
              cfg) -> dict:
    """MLM + NSP (module docstring)."""
    if "encoder_nsp_labels" not in batch:
        raise UserError("model.nsp_head needs next-sentence pairs (encoder_nsp_labels): train it on a BERT task "
                        "such as builtin_bert, or set model.nsp_head=False for MLM only")
    y, seg = model.hidden(batch, deterministic=deterministic, dropout_rng=dropout_rng)
    targets, weights = models.targets_and_weights(cfg, batch)
    mlm = losses.loss_position_sums(lambda h: model.logits(h, model.encoder), y, targets, weights, z_loss=z_loss,
                                    label_smoothing=label_smoothing)   # logits at the masked positions only
    starts = _starts(batch).astype(jnp.float32)
    nsp = _example_sums(bert.nsp_logits(model, y, seg), batch["encoder_nsp_labels"].astype(jnp.int32), starts,
                        z_loss=0.0)
    w, n = mlm["weight_sum"], nsp["weight_sum"]
    scale = jax.lax.stop_gradient(w / jnp.maximum(n, 1.0))
    return {
        "loss_sum": mlm["loss_sum"] + scale * nsp["loss_sum"],
        "z_loss_sum": mlm["z_loss_sum"],
        "correct_sum": mlm["correct_sum"],
        "weight_sum": w,
        "aux": {"mlm_loss": (mlm["loss_sum"] - mlm["z_loss_sum"], w), "mlm_accuracy": (mlm["correct_sum"], w),
                "nsp_loss": (nsp["loss_sum"], n), "nsp_accuracy": (nsp["correct_sum"], n)},
    }


def classification_sums(model, batch, *, deterministic: bool, dropout_rng, z_loss: float, label_smoothing: float,
                        cfg) -> dict:
    """Cross-entropy over classes per example (module docstring)."""
    if "encoder_class_labels" not in batch:
        raise UserError("an encoder classifier (model.num_classes > 0) needs classification batches "
                        "(encoder_class_labels, from the encoder_classifier feature converter)")
    labels = batch["encoder_class_labels"].astype(jnp.int32)
    logits = model.classify(batch, deterministic=deterministic, dropout_rng=dropout_rng, per_position=True)
    weights = (_starts(batch) & (labels >= 0)).astype(jnp.float32)
    sums = _example_sums(logits, labels, weights, z_loss, label_smoothing)
    sums["aux"] = {"class_accuracy": (sums["correct_sum"], sums["weight_sum"])}   # = accuracy, named plainly
    return sums
