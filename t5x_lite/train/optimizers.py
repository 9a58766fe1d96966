"""Learning-rate schedules and optimizers (optax), configured from `config.optimizer`.

Schedules (all take the 0-based step count the update is applied at):

* ``rsqrt``    T5's "constant * rsqrt_decay": lr = learning_rate / sqrt(max(step, warmup_steps)).
               With learning_rate=1.0 and warmup_steps=10_000 this is 0.01 for the first 10k steps,
               then 1/sqrt(step) (T5X pretrain.gin).
* ``linear``   linear warm-up 0 -> learning_rate over warmup_steps, then linear decay to end_learning_rate
               at train.num_steps.
* ``cosine``   linear warm-up, then cosine decay to end_learning_rate at train.num_steps.
* ``constant`` (optional linear warm-up, then) a constant learning_rate; T5 fine-tuning uses 0.001.

Optimizers:

* ``adafactor`` T5's defaults: factored second moments (dims >= 128), decay_rate 0.8 (beta2 = 1 - t^-0.8),
                update clipping threshold 1.0, no momentum, multiply_by_parameter_scale.
* ``adamw``     b1 0.9, b2 0.999 (configurable), decoupled weight decay.

``grad_clip`` > 0 (the caller passes train.grad_clip) prepends global-norm gradient clipping.
Every setting and its default is declared in the optimizer section of train/default_config.py.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from t5x_lite.errors import UserError
from t5x_lite.train import default_config

NAMES = ("adafactor", "adamw")
SCHEDULES = ("rsqrt", "linear", "cosine", "constant")


def _settings(opt_cfg: Mapping[str, Any]) -> dict:
    """`opt_cfg` over the optimizer section of train/default_config.py (the one place its
    defaults live), so a caller may pass only the keys it changes."""
    settings = default_config.get_config().optimizer.to_dict()
    given = opt_cfg.to_dict() if hasattr(opt_cfg, "to_dict") else dict(opt_cfg)
    unknown = sorted(set(given) - set(settings))
    if unknown:
        raise UserError(f"unknown optimizer keys: {', '.join(unknown)} (known: {', '.join(sorted(settings))})")
    settings.update(given)
    return settings


def make_schedule(opt_cfg: Mapping[str, Any], num_steps: int) -> Callable[[Any], Any]:
    """step -> learning rate (a jnp scalar; jit-friendly)."""
    o = _settings(opt_cfg)
    name, lr = o["schedule"], float(o["learning_rate"])
    warmup, end_lr = int(o["warmup_steps"]), float(o["end_learning_rate"])
    if lr <= 0:
        raise UserError(f"optimizer.learning_rate must be positive, got {lr}")
    if warmup < 0:
        raise UserError(f"optimizer.warmup_steps must be >= 0, got {warmup}")
    decay_steps = max(int(num_steps) - warmup, 1)

    def warm(step):
        # Linear warm-up reaching the full rate at step == warmup.
        return lr * jnp.minimum(1.0, (step + 1.0) / max(warmup, 1))

    if name == "rsqrt":
        def schedule(step):
            step = jnp.asarray(step, jnp.float32)
            return lr / jnp.sqrt(jnp.maximum(step, max(warmup, 1)))
    elif name == "linear":
        def schedule(step):
            step = jnp.asarray(step, jnp.float32)
            frac = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
            return jnp.where(step < warmup, warm(step), lr + (end_lr - lr) * frac)
    elif name == "cosine":
        def schedule(step):
            step = jnp.asarray(step, jnp.float32)
            frac = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
            cos = end_lr + (lr - end_lr) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
            return jnp.where(step < warmup, warm(step), cos)
    elif name == "constant":
        def schedule(step):
            step = jnp.asarray(step, jnp.float32)
            return jnp.where(step < warmup, warm(step), lr) if warmup else jnp.full((), lr, jnp.float32)
    else:
        raise UserError(f"optimizer.schedule must be one of {'|'.join(SCHEDULES)}, got {name!r}")
    return schedule


def scale_by_parameter_rms(min_scale: float = 1e-3) -> optax.GradientTransformation:
    """Adafactor's multiply_by_parameter_scale: update * max(rms(param), min_scale), as
    optax.scale_by_param_block_rms, whose state (EmptyState) it keeps.  optax computes the RMS a
    second time through a where over the whole parameter, for a gradient at zero that an optimizer
    never takes; XLA:CPU materialised that where for the two 32128 x 512 tables of T5.1.1-small
    (about 3% of its train step).  Same value, one pass."""
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_parameter_rms needs the parameters")
        scale = lambda p: jnp.maximum(jnp.sqrt(jnp.mean(jnp.square(p))), min_scale)
        return jax.tree.map(lambda u, p: u * scale(p), updates, params), state
    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def adafactor(o: Mapping[str, Any], schedule, weight_decay: float) -> optax.GradientTransformation:
    """optax.adafactor's chain (same transformations, order and state), with scale_by_parameter_rms."""
    tx = [optax.scale_by_factored_rms(bool(o["factored"]), float(o["decay_rate"]), 0,
                                      int(o["min_dim_size_to_factor"]), float(o["adafactor_epsilon"]))]
    if float(o["clipping_threshold"]):
        tx.append(optax.clip_by_block_rms(float(o["clipping_threshold"])))
    tx.append(optax.scale_by_learning_rate(schedule, flip_sign=False))
    if bool(o["multiply_by_parameter_scale"]):
        tx.append(scale_by_parameter_rms())
    if float(o["momentum"]):
        tx.append(optax.ema(float(o["momentum"]), debias=False, accumulator_dtype=jnp.float32))
    if weight_decay:
        tx.append(optax.add_decayed_weights(weight_decay))
    tx.append(optax.scale(-1))
    return optax.chain(*tx)


def make_optimizer(opt_cfg: Mapping[str, Any], num_steps: int,
                   grad_clip: float = 0.0) -> tuple[optax.GradientTransformation, Callable]:
    """(optax transformation, schedule).  The schedule is also used for logging."""
    o = _settings(opt_cfg)
    schedule = make_schedule(o, num_steps)
    weight_decay = float(o["weight_decay"])
    if o["name"] == "adafactor":
        tx = adafactor(o, schedule, weight_decay)
    elif o["name"] == "adamw":
        tx = optax.adamw(learning_rate=schedule, b1=float(o["b1"]), b2=float(o["b2"]), eps=float(o["epsilon"]),
                         weight_decay=weight_decay)
    else:
        raise UserError(f"optimizer.name must be one of {'|'.join(NAMES)}, got {o['name']!r}")
    if grad_clip < 0:
        raise UserError(f"train.grad_clip must be >= 0, got {grad_clip}")
    if grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(float(grad_clip)), tx)
    return tx, schedule
