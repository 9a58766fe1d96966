"""What a model is trained on: model + batch -> the summed loss and metrics of one (micro)batch.

Every objective returns the same dict of sums, so the train step, gradient accumulation and the
eval loss do not depend on the model family:

    loss_sum     summed loss (what is differentiated)
    z_loss_sum   summed z-loss part of loss_sum
    correct_sum  summed correct predictions of the main head
    weight_sum   how many predictions were scored (the denominator of loss / accuracy)
    aux          {name: (numerator, denominator)}: extra metrics (a head's own loss or accuracy),
                 reported as numerator / denominator; may be empty

`sums_fn_for(model_cfg)` picks the objective for a model config:
    token_sums       language-model losses over target tokens (T5, decoder-only, encoder-only MLM)
    electra_sums     generator MLM + rtd_weight * replaced-token detection (architecture "electra")
    bert_sums        BERT: MLM + next-sentence prediction (encoder_only with nsp_head; bert_objective.py)
    classification_sums  cross-entropy over classes per example (encoder_only with num_classes > 0)
"""

from __future__ import annotations

from typing import Callable

from t5x_lite import models
from t5x_lite.train import losses
from t5x_lite.train.bert_objective import bert_sums, classification_sums  # noqa: F401  (objectives.bert_sums)
from t5x_lite.train.electra_objective import electra_sums

SumsFn = Callable[..., dict]  # (model, batch, *, deterministic, dropout_rng, z_loss, label_smoothing) -> sums


def token_sums(model, batch, *, deterministic: bool, dropout_rng, z_loss: float, label_smoothing: float,
               cfg) -> dict:
    """Cross-entropy (+ z-loss) over the target tokens, weighted by *_loss_weights."""
    targets, weights = models.targets_and_weights(cfg, batch)
    kw = dict(z_loss=z_loss, label_smoothing=label_smoothing)
    if cfg.architecture in ("decoder_only", "encoder_only"):
        # the loss is on a fraction of the positions (targets after inputs, masked tokens): the
        # output layer runs only there (losses.loss_position_sums)
        y = model.hidden(batch, deterministic=deterministic, dropout_rng=dropout_rng)
        y, stack = (y, model.decoder) if cfg.architecture == "decoder_only" else (y[0], model.encoder)
        sums = losses.loss_position_sums(lambda h: model.logits(h, stack), y, targets, weights, **kw)
    else:
        logits = models.model_logits(model, batch, deterministic=deterministic, dropout_rng=dropout_rng)
        sums = losses.weighted_sums(logits, targets, weights, **kw)
    sums["aux"] = {}
    return sums


def sums_fn_for(cfg) -> SumsFn:
    """The objective of a model config (see the module docstring)."""
    if cfg.architecture == "electra":
        fn = electra_sums
    elif cfg.architecture == "encoder_only" and cfg.num_classes > 0:
        fn = classification_sums
    elif cfg.architecture == "encoder_only" and cfg.nsp_head:
        fn = bert_sums
    else:
        fn = token_sums

    def sums(model, batch, *, deterministic, dropout_rng, z_loss, label_smoothing):
        return fn(model, batch, deterministic=deterministic, dropout_rng=dropout_rng, z_loss=z_loss,
                  label_smoothing=label_smoothing, cfg=cfg)
    return sums
