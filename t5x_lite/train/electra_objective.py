"""ELECTRA's objective (Clark et al. 2020): generator MLM + rtd_weight * replaced-token detection.

The batch is an MLM batch (the bert_mlm preprocessor, e.g. task builtin_mlm, through the
encoder_only feature converter): encoder_input_tokens (15% of the tokens chosen; of those
80% [MASK], 10% random, 10% kept), encoder_target_tokens (the originals) and
encoder_loss_weights (1 on the chosen positions).  One step:

  1. the generator reads encoder_input_tokens and predicts the originals at the chosen
     positions (cross-entropy, + T5X's z-loss and label smoothing as set for the run);
  2. at every chosen position a token is sampled from the generator's softmax
     (models/electra.py replace_tokens; stop_gradient, so the discriminator's loss sends
     no gradient into the generator), the other positions keep the original token;
  3. the discriminator reads that sequence and predicts, for every real (non-padding)
     token, whether it differs from the original (sigmoid binary cross-entropy).  A
     sampled token equal to the original is labelled "original".

The sampling key.  Training: the step's key, fold_in(base_key, step) (fold_in(., i) for
microbatch i under accumulation; train/step.py), split into (generator dropout, sampling,
discriminator dropout): a function of the step alone, so a resumed run draws the same
samples and stays bit-exact.  The step hands electra a key even at dropout_rate 0
(step.bundle_from_config).  Without a key (the eval step) the sampling key is a hash of the
batch's tokens folded into key(0): the same batch always gets the same samples.

The loss and how it maps onto the sums the step uses.  Per (micro)batch let M = number of
chosen positions (sum of encoder_loss_weights), N = number of real tokens, and

    L = (1/M) sum_chosen CE_gen  +  w * (1/N) sum_real BCE_rtd        (the paper's loss, w = rtd_weight)

(CE_gen includes the z-loss term when train.z_loss > 0).  The sums are

    weight_sum  = N
    loss_sum    = (N / M) * sum_chosen CE_gen + w * sum_real BCE_rtd   (= N * L)
    z_loss_sum  = (N / M) * sum_chosen z_loss
    correct_sum = discriminator's correct predictions over the real tokens

N / M is a constant of the data (no gradient).  So the logged loss, loss_sum / weight_sum, is
L itself, accuracy is the RTD accuracy, and the gradient the step applies is
    loss_normalization "mean": grad(loss_sum) / N = grad L exactly (the paper's gradient);
    loss_normalization "sum":  grad(loss_sum)     = N * grad L (N = real tokens of the batch, a
                               near-constant batch_size * length with packing).
With gradient accumulation over microbatches i the RTD term is exactly the whole batch's mean
and the generator term is sum_i (N_i / N) * (mean CE over microbatch i's chosen positions): the
whole-batch masked mean whenever M_i / N_i is the same in every microbatch (15% in expectation).

aux metrics ({name: (numerator, denominator)}, logged as `name` and `eval/name`):
    gen_mlm_loss        generator cross-entropy (no z-loss) per chosen position
    gen_mlm_accuracy    generator argmax == original per chosen position
    rtd_loss            discriminator sigmoid BCE per real token
    rtd_accuracy        discriminator correct per real token (= accuracy)
    replaced_fraction   real tokens the discriminator sees replaced (its positive class rate)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from t5x_lite.models import targets_and_weights
from t5x_lite.models.electra import replace_tokens
from t5x_lite.models.layers import padding_or_segments
from t5x_lite.train import losses


def batch_key(tokens) -> jax.Array:
    """A key that is a function of the batch's tokens alone (the eval step has no step key)."""
    t = tokens.astype(jnp.uint32)
    idx = jnp.arange(t.size, dtype=jnp.uint32).reshape(t.shape)
    return jax.random.fold_in(jax.random.key(0), jnp.sum(t * (idx * jnp.uint32(2654435761) + jnp.uint32(1))))


def electra_sums(model, batch, *, deterministic: bool, dropout_rng, z_loss: float, label_smoothing: float,
                 cfg) -> dict:
    """The sums of one (micro)batch (see the module docstring for the math)."""
    inputs = batch["encoder_input_tokens"]
    seg, pos, types = (batch.get(f"encoder_{k}") for k in ("segment_ids", "positions", "token_type_ids"))
    originals, chosen = targets_and_weights(cfg, batch)            # [B, L] int32 / float32
    real = (padding_or_segments(originals, seg) != 0).astype(jnp.float32)
    chosen = chosen * real
    if dropout_rng is None:
        k_gen, k_sample, k_disc = None, batch_key(inputs), None
    else:
        k_gen, k_sample, k_disc = jax.random.split(dropout_rng, 3)

    # 1. generator MLM at the chosen positions
    gen_logits = model.generator_logits(inputs, seg, pos, types, key=k_gen, deterministic=deterministic)
    ce, zl, gen_correct = losses.token_losses(gen_logits, originals, z_loss=z_loss, label_smoothing=label_smoothing)
    # 2. the discriminator's input: samples at the chosen positions (no gradient), originals elsewhere
    disc_inputs, replaced = replace_tokens(k_sample, gen_logits, originals, chosen > 0)
    labels = replaced.astype(jnp.float32)
    # 3. replaced-token detection over every real token
    rtd_logits = model.discriminate(disc_inputs, seg, pos, types, key=k_disc, deterministic=deterministic)
    bce = jnp.logaddexp(0.0, rtd_logits) - labels * rtd_logits     # sigmoid BCE, stable form
    rtd_correct = ((rtd_logits > 0) == replaced).astype(jnp.float32)

    m, n = jnp.sum(chosen), jnp.sum(real)
    scale = n / jnp.maximum(m, 1.0)
    gen_sum, zl_sum, bce_sum = jnp.sum(ce * chosen), jnp.sum(zl * chosen), jnp.sum(bce * real)
    w = float(cfg.electra_rtd_weight)
    rtd_correct_sum = jnp.sum(rtd_correct * real)
    return {
        "loss_sum": scale * gen_sum + w * bce_sum,
        "z_loss_sum": scale * zl_sum,
        "correct_sum": rtd_correct_sum,
        "weight_sum": n,
        "aux": {
            "gen_mlm_loss": (gen_sum - zl_sum, m),
            "gen_mlm_accuracy": (jnp.sum(gen_correct * chosen), m),
            "rtd_loss": (bce_sum, n),
            "rtd_accuracy": (rtd_correct_sum, n),
            "replaced_fraction": (jnp.sum(labels * real), n),
        },
    }
