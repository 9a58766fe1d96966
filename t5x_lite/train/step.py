"""Functional train state, the jitted train step and the eval step.

The train state is a plain dict of arrays, which makes sharding and
checkpointing trivial::

    {"params": pure dict (nnx.state(model, nnx.Param).to_pure_dict()),
     "opt_state": optax state,
     "step": int32 scalar (number of updates applied)}

The NNX model is rebuilt inside the jitted functions with
``nnx.merge(graphdef, params)``, so the graph definition is static and only
arrays cross the jit boundary.

Init, the train step and the eval step are traced and run inside
``partitioning.activate(mesh)``, so the model's activation constraints
(``models.layers.constrain``) take effect: the functions returned here enter
the context on every call (see ``partitioning.InMesh``).

Train step (T5X semantics):
  * dropout key = fold_in(base_key, step) (and fold_in(., microbatch) under accumulation);
  * gradient accumulation: the global batch [B, ...] is viewed as
    [B/M, M, ...] -> [M, B/M, ...] so each microbatch keeps rows that already live
    on every device (no data movement), then `lax.scan` sums per-microbatch
    gradients of the *summed* loss;
  * normalisation "sum" (T5X's default loss_normalizing_factor=None) keeps the
    summed gradient; "mean" divides by the number of real target tokens of the
    whole batch, so accumulation gives the same update as one big batch;
  * metrics (all scalars): loss / cross_ent_loss / z_loss per target token,
    accuracy, grad_norm (before clipping), learning_rate, num_tokens, finite.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from t5x_lite import models, partitioning
from t5x_lite.train import objectives

State = dict  # {"params", "opt_state", "step"}


@dataclasses.dataclass
class ModelBundle:
    """Everything the step needs to know about a model, architecture-agnostic.

    build(rngs) -> nnx.Module;
    sums(model, batch, *, deterministic, dropout_rng, z_loss, label_smoothing) -> the summed loss and
    metrics of one batch (t5x_lite/train/objectives.py), what the train and eval steps use.
    """
    build: Callable[[nnx.Rngs], nnx.Module]
    sums: Callable[..., dict]
    dropout: bool = False
    graphdef: Any = None
    abstract_state: Any = None  # nnx.State of ShapeDtypeStructs (carries logical axis names)

    def __post_init__(self):
        with nnx.use_eager_sharding(False):
            abstract = nnx.eval_shape(lambda: self.build(nnx.Rngs(0)))
        self.graphdef, self.abstract_state = nnx.split(abstract, nnx.Param)

    def merge(self, params) -> nnx.Module:
        return nnx.merge(self.graphdef, params)


def bundle_from_config(model_cfg) -> ModelBundle:
    """A ModelBundle for `models.build_model(model_cfg)` (any architecture)."""
    return ModelBundle(
        build=lambda rngs: models.build_model(model_cfg, rngs),
        sums=objectives.sums_fn_for(model_cfg),
        # electra samples the generator's replacements with the step's key (fold_in(base_key, step)),
        # so it gets one even without dropout (layers skip dropout at rate 0).
        dropout=float(model_cfg.dropout_rate) > 0 or model_cfg.architecture == "electra",
    )


# ----------------------------------------------------------------------------
# State creation and shardings
# ----------------------------------------------------------------------------

def _init_fn(bundle: ModelBundle, tx):
    def init(key):
        with nnx.use_eager_sharding(False):
            model = bundle.build(nnx.Rngs(key))
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    return init


def state_specs(bundle: ModelBundle, tx, mesh) -> tuple[State, State]:
    """(abstract state of ShapeDtypeStructs, PartitionSpec tree) for the whole train state."""
    from jax.sharding import PartitionSpec as P

    abstract = jax.eval_shape(_init_fn(bundle, tx), jax.random.key(0))
    pspecs = partitioning.param_specs(bundle.abstract_state, mesh)
    specs = {
        "params": pspecs,
        "opt_state": partitioning.opt_state_specs(abstract["opt_state"], abstract["params"], pspecs),
        "step": P(),
    }
    return abstract, specs


def abstract_with_shardings(abstract: State, shardings: State) -> State:
    """ShapeDtypeStructs carrying target shardings (what Orbax restores onto)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def init_state(bundle: ModelBundle, tx, shardings: State, seed: int) -> State:
    """Initialise params + optimizer state directly into their shardings (nothing is
    materialised unsharded, so large models fit)."""
    init = jax.jit(_init_fn(bundle, tx), out_shardings=shardings)
    mesh = jax.tree.leaves(shardings)[0].mesh
    return partitioning.InMesh(init, mesh)(jax.random.key(seed))


# ----------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------

def _tree_add(a, b):
    return jax.tree.map(jnp.add, a, b)


def make_train_step(bundle: ModelBundle, tx, schedule, *, mesh, state_shardings, z_loss: float = 1e-4,
                    label_smoothing: float = 0.0, loss_normalization: str = "sum",
                    num_microbatches: int = 1, base_key=None):
    """A jitted (state, batch) -> (state, metrics) with the state donated, run inside
    `partitioning.activate(mesh)`."""
    if loss_normalization not in ("sum", "mean"):
        raise ValueError(f"loss_normalization must be 'sum' or 'mean', got {loss_normalization!r}")
    base_key = jax.random.key(0) if base_key is None else base_key
    batch_sharding = partitioning.batch_sharding(mesh)
    deterministic = not bundle.dropout

    def loss_fn(params, batch, dropout_rng):
        model = bundle.merge(params)
        sums = bundle.sums(model, batch, deterministic=deterministic,
                           dropout_rng=None if deterministic else dropout_rng, z_loss=z_loss,
                           label_smoothing=label_smoothing)
        return sums["loss_sum"], sums

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def train_step(state: State, batch: dict):
        params, step = state["params"], state["step"]
        rng = jax.random.fold_in(base_key, step)
        if num_microbatches <= 1:
            grads, sums = grad_fn(params, batch, rng)
        else:
            m = num_microbatches

            def split(x):  # [B, ...] -> [M, B/M, ...], microbatch i = rows i, i+M, ...
                x = x.reshape((x.shape[0] // m, m) + x.shape[1:])
                return jnp.swapaxes(x, 0, 1)

            micro = jax.tree.map(split, batch)

            def body(carry, xs):
                mb, i = xs
                mb = jax.lax.with_sharding_constraint(mb, batch_sharding)
                g, s = grad_fn(params, mb, jax.random.fold_in(rng, i))
                return _tree_add(carry, (g, s)), None

            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params,
                                                                 jax.tree.map(lambda x: x[0], micro), rng))
            (grads, sums), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(m)))
        num_tokens = sums["weight_sum"]
        if loss_normalization == "mean":
            grads = jax.tree.map(lambda g: g / jnp.maximum(num_tokens, 1.0), grads)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        denom = jnp.maximum(num_tokens, 1.0)
        loss = sums["loss_sum"] / denom
        metrics = {
            "loss": loss,
            "z_loss": sums["z_loss_sum"] / denom,
            "cross_ent_loss": (sums["loss_sum"] - sums["z_loss_sum"]) / denom,
            "accuracy": sums["correct_sum"] / denom,
            "grad_norm": grad_norm,
            "learning_rate": schedule(step),
            "num_tokens": num_tokens,
            # Checked on the host before every save: a non-finite step is never checkpointed.
            **{name: num / jnp.maximum(den, 1.0) for name, (num, den) in sums["aux"].items()},
            "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(new_params)),
        }
        return {"params": new_params, "opt_state": opt_state, "step": step + 1}, metrics

    return partitioning.InMesh(jax.jit(train_step, in_shardings=(state_shardings, batch_sharding),
                                       out_shardings=(state_shardings, None), donate_argnums=(0,)), mesh)


def make_eval_step(bundle: ModelBundle, *, mesh, params_shardings, z_loss: float = 1e-4):
    """A jitted (params, batch) -> summed metrics (loss_sum, correct_sum, weight_sum, z_loss_sum, aux),
    run inside `partitioning.activate(mesh)`."""
    def eval_step(params, batch):
        model = bundle.merge(params)
        return bundle.sums(model, batch, deterministic=True, dropout_rng=None, z_loss=z_loss, label_smoothing=0.0)
    return partitioning.InMesh(jax.jit(eval_step, in_shardings=(params_shardings,
                                                                partitioning.batch_sharding(mesh))), mesh)
