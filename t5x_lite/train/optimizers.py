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

``optimizer.grad_clip`` > 0 (or train.grad_clip) prepends global-norm gradient clipping.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax.numpy as jnp
import optax

from t5x_lite.errors import UserError

SCHEDULES = ("rsqrt", "linear", "cosine", "constant")
OPTIMIZERS = ("adafactor", "adamw")


def _get(cfg: Mapping[str, Any], key: str, default):
    try:
        value = cfg[key]
    except (KeyError, AttributeError):
        return default
    return default if value is None else value


def make_schedule(opt_cfg: Mapping[str, Any], num_steps: int) -> Callable[[Any], Any]:
    """step -> learning rate (a jnp scalar; jit-friendly)."""
    name = _get(opt_cfg, "schedule", "rsqrt")
    lr = float(_get(opt_cfg, "learning_rate", 0.01))
    warmup = int(_get(opt_cfg, "warmup_steps", 0))
    end_lr = float(_get(opt_cfg, "end_learning_rate", 0.0))
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
        raise UserError(f"optimizer.schedule must be one of {SCHEDULES}, got {name!r}")
    return schedule


def make_optimizer(opt_cfg: Mapping[str, Any], num_steps: int,
                   grad_clip: float = 0.0) -> tuple[optax.GradientTransformation, Callable]:
    """(optax transformation, schedule).  The schedule is also used for logging."""
    name = _get(opt_cfg, "name", "adafactor")
    schedule = make_schedule(opt_cfg, num_steps)
    weight_decay = float(_get(opt_cfg, "weight_decay", 0.0))
    if name == "adafactor":
        tx = optax.adafactor(
            learning_rate=schedule,
            min_dim_size_to_factor=int(_get(opt_cfg, "min_dim_size_to_factor", 128)),
            decay_rate=float(_get(opt_cfg, "decay_rate", 0.8)),
            multiply_by_parameter_scale=bool(_get(opt_cfg, "multiply_by_parameter_scale", True)),
            clipping_threshold=_get(opt_cfg, "clipping_threshold", 1.0),
            momentum=_get(opt_cfg, "momentum", None),
            weight_decay_rate=weight_decay or None,
            eps=float(_get(opt_cfg, "epsilon", 1e-30)),
            factored=bool(_get(opt_cfg, "factored", True)),
        )
    elif name == "adamw":
        tx = optax.adamw(
            learning_rate=schedule,
            b1=float(_get(opt_cfg, "b1", 0.9)),
            b2=float(_get(opt_cfg, "b2", 0.999)),
            eps=float(_get(opt_cfg, "epsilon", 1e-8)),
            weight_decay=weight_decay,
        )
    else:
        raise UserError(f"optimizer.name must be one of {OPTIMIZERS}, got {name!r}")
    clip = float(_get(opt_cfg, "grad_clip", 0.0) or grad_clip or 0.0)
    if clip < 0:
        raise UserError(f"grad_clip must be >= 0, got {clip}")
    if clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    return tx, schedule
