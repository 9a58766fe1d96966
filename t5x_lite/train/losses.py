"""Token-level cross-entropy with T5X's z-loss and label smoothing.

For logits z [B, L, V] (float32) and integer targets t:

    log Z       = logsumexp(z)                      (the softmax normaliser)
    soft target = (1 - s) on t, s / (V - 1) elsewhere (label smoothing s)
    cross_ent   = -sum_v soft_v * (z_v - log Z) - c  (c = the soft target's own entropy term,
                                                      so a perfect prediction scores 0, as in T5X)
    z_loss      = z_loss_weight * (log Z)^2          (keeps logits from drifting; stabilises bf16)

The per-token losses are multiplied by the loss weights (0 on padding) and
*summed*; how the sum is normalised ("sum" = T5X's default
loss_normalizing_factor=None, or "mean" = divide by the number of real target
tokens) is the train step's business, because with gradient accumulation the
token count is only known for the whole batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# train.loss_normalization: "sum" (T5X's loss_normalizing_factor=None) or "mean" per real target token.
NORMALIZATIONS = ("sum", "mean")


def label_smoothing_constant(vocab_size: int, label_smoothing: float) -> float:
    """Entropy of the smoothed target distribution (subtracted so the minimum loss is 0)."""
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab_size - 1)
    const = confidence * math.log(confidence) if confidence > 0 else 0.0
    if low > 0:
        const += (vocab_size - 1) * low * math.log(low + 1e-20)
    return -const


def token_losses(logits: jax.Array, targets: jax.Array, *, z_loss: float = 1e-4,
                 label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-token (total loss, z-loss part, correct) for logits [B, L, V], targets [B, L]."""
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    log_z = jax.nn.logsumexp(logits, axis=-1)                       # [B, L]
    # log p(target) = logit_target - log_z, the same subtraction as indexing log_probs, without
    # materialising log_probs [B, L, V] (the loss and its gradient ran 2x faster on CPU)
    target_logp = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0] - log_z
    if label_smoothing:
        confidence = 1.0 - label_smoothing
        low = label_smoothing / (vocab - 1)
        # sum_v soft_v * logp_v = low * sum_v logp_v + (confidence - low) * logp_t
        mean_part = low * jnp.sum(logits - log_z[..., None], axis=-1)
        cross_ent = -(mean_part + (confidence - low) * target_logp)
        cross_ent = cross_ent - label_smoothing_constant(vocab, label_smoothing)
    else:
        cross_ent = -target_logp
    zl = z_loss * jnp.square(log_z)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return cross_ent + zl, zl, correct


def weighted_sums(logits, targets, weights, *, z_loss: float = 1e-4, label_smoothing: float = 0.0) -> dict:
    """Sums over real target tokens: loss, z_loss, correct, and the weight total."""
    weights = weights.astype(jnp.float32)
    loss, zl, correct = token_losses(logits, targets, z_loss=z_loss, label_smoothing=label_smoothing)
    return {
        "loss_sum": jnp.sum(loss * weights),
        "z_loss_sum": jnp.sum(zl * weights),
        "correct_sum": jnp.sum(correct * weights),
        "weight_sum": jnp.sum(weights),
    }


def _tier(length: int, fraction: float) -> int:
    """ceil(length * fraction) rounded up to a multiple of 8, at most length."""
    return min(length, -(-math.ceil(length * fraction) // 8) * 8)


def loss_position_sums(logits_fn, hidden, targets, weights, *, z_loss: float = 1e-4,
                       label_smoothing: float = 0.0) -> dict:
    """weighted_sums(logits_fn(hidden), targets, weights), with the output layer applied only where
    the loss is taken.

    hidden [B, L, D] -> logits_fn -> [B, L, V] dominates a small model's step when V >> D, and a
    decoder-only model reading inputs ++ targets (or an MLM) takes its loss on a fraction of the
    positions.  Shapes must be static under jit, so the positions with weight != 0 are moved to the
    front of each row (a stable sort keeps their order) and the first K of them go through the output
    layer, K the smallest tier (L/4, L/2, rounded up to 8) that holds every row's count; a batch
    with more uses all L positions.  `lax.switch` runs only the chosen branch.  The sums are the
    full computation's up to float summation order: the positions left out have weight 0."""
    b, length = targets.shape
    tiers = sorted({k for k in (_tier(length, 0.25), _tier(length, 0.5)) if k < length})
    kw = dict(z_loss=z_loss, label_smoothing=label_smoothing)
    if not tiers:
        return weighted_sums(logits_fn(hidden), targets, weights, **kw)
    live = weights != 0
    count = jnp.max(jnp.sum(live.astype(jnp.int32), axis=-1))              # the fullest row
    order = jnp.argsort(jnp.logical_not(live).astype(jnp.int32), axis=-1, stable=True)   # [B, L]

    def compact(k):
        def branch(hidden, targets, weights):
            idx = order[:, :k]                                             # [B, K] loss positions first
            h = jnp.take_along_axis(hidden, idx[..., None], axis=1)        # [B, K, D]
            return weighted_sums(logits_fn(h), jnp.take_along_axis(targets, idx, axis=1),
                                 jnp.take_along_axis(weights, idx, axis=1), **kw)
        return branch

    def full(hidden, targets, weights):
        return weighted_sums(logits_fn(hidden), targets, weights, **kw)

    index = sum((count > k).astype(jnp.int32) for k in tiers)
    return jax.lax.switch(index, [compact(k) for k in tiers] + [full], hidden, targets, weights)
