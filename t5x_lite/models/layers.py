"""T5 building blocks in Flax NNX: RMS layer norm, dense kernels with logical
axis names, relative position biases, MLP, embeddings, dropout with explicit
keys, and attention masks.  Attention itself is models/attention.py.

Shape letters used in comments:
    B batch, L / Lq / Lk lengths (query / key), D d_model, H heads, K d_kv,
    F d_ff, V vocab, N number of layers.

Every parameter carries logical axis names (see t5x_lite/partitioning.py) in its
`out_sharding` metadata; main activations get `constrain(x, names)`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.core import spmd as core_spmd
from jax.sharding import PartitionSpec


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# --------------------------------------------------------------------------- sharding
def _mesh_active() -> bool:
    return not jax.sharding.get_abstract_mesh().empty


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """with_sharding_constraint by *logical* names, a no-op without a mesh or
    without logical rules (enter both with `partitioning.activate(mesh)`).
    Dimensions that the mapped mesh axes do not divide (e.g. batch 1 while
    decoding) are replicated, as `partitioning.logical_to_spec` does for params."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not core_spmd.get_logical_axis_rules():
        return x
    spec = core_spmd.apply_rules(PartitionSpec(*names), None)
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
    dims = []
    for size, axes in zip(x.shape, tuple(spec) + (None,) * (x.ndim - len(spec))):
        if axes is None:
            dims.append(None)
            continue
        axes_t = axes if isinstance(axes, tuple) else (axes,)
        n = math.prod(sizes[a] for a in axes_t)
        dims.append(axes if size % n == 0 else None)
    return jax.lax.with_sharding_constraint(x, PartitionSpec(*dims))


def make_param(rngs: nnx.Rngs, init, shape: tuple[int, ...], names: tuple[str, ...], dtype) -> nnx.Param:
    """A parameter with logical axis names.  Under a mesh (jax.set_mesh) it is
    sharded eagerly (init inside jax.jit gives sharded arrays) unless eager
    sharding is switched off (nnx.use_eager_sharding(False)); without a mesh it
    only records the names (nnx.get_partition_spec still reads them)."""
    assert len(shape) == len(names), (shape, names)
    eager = _mesh_active() and nnx.using_eager_sharding()
    return nnx.Param(init(rngs.params(), shape, dtype), out_sharding=names, eager_sharding=eager)


def normal(std: float):
    return jax.nn.initializers.normal(stddev=std)


# --------------------------------------------------------------------------- dropout
def dropout_keep(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """Boolean keep-mask ~ Bernoulli(1 - rate) from raw random bits.  Callers draw
    the masks of several same-shaped dropout sites at once (a leading site axis):
    every draw inlines a Threefry hash, and fewer draws compile much faster."""
    threshold = np.uint32(min(int(round((1.0 - rate) * 2.0 ** 32)), 2 ** 32 - 1))
    # Drawn as 2-D (leading dim, rest) and reshaped: partitionable Threefry on
    # 4-D attention shapes compiles several times slower on CPU; the leading
    # (batch or site) dim stays shardable through the reshape.
    shape = tuple(shape)
    flat = (shape[0], math.prod(shape[1:])) if len(shape) > 1 else shape
    return (jax.random.bits(key, flat, jnp.uint32) < threshold).reshape(shape)


def apply_keep(x: jax.Array, keep: jax.Array | None, rate: float) -> jax.Array:
    """Inverted dropout with a precomputed keep-mask (None = no dropout)."""
    if keep is None:
        return x
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def dropout(x: jax.Array, rate: float, key: jax.Array | None, deterministic: bool) -> jax.Array:
    """Inverted dropout with an explicit key (models hold no RNG state)."""
    if deterministic or rate == 0.0:
        return x
    if key is None:
        raise ValueError("dropout needs a dropout_rng key when deterministic=False and dropout_rate > 0")
    return apply_keep(x, dropout_keep(key, rate, x.shape), rate)


# --------------------------------------------------------------------------- basic layers
class RMSNorm(nnx.Module):
    """T5 layer norm: scale only, no bias, no mean subtraction; the variance is
    computed in float32 whatever the compute dtype (as HF's T5LayerNorm)."""

    def __init__(self, d: int, *, eps: float, dtype, param_dtype, rngs: nnx.Rngs):
        self.scale = make_param(rngs, jax.nn.initializers.ones, (d,), ("embed",), param_dtype)
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = x32 * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(self.dtype)


class Dense(nnx.Module):
    """x[..., *in_shape] @ kernel[*in_shape, *out_shape] (a DenseGeneral).

    Kernels keep their head structure: query/key/value are (D, H, K) and the
    attention output is (H, K, D), so `heads` can be sharded on its own."""

    def __init__(self, in_shape, out_shape, names, std, *, dtype, param_dtype, rngs: nnx.Rngs):
        in_shape, out_shape = tuple(in_shape), tuple(out_shape)
        self.kernel = make_param(rngs, normal(std), in_shape + out_shape, tuple(names), param_dtype)
        self.n_in = len(in_shape)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel[...].astype(self.dtype)
        n = self.n_in
        contract = (tuple(range(x.ndim - n, x.ndim)), tuple(range(n)))
        return jax.lax.dot_general(x.astype(self.dtype), k, (contract, ((), ())))


class Embed(nnx.Module):
    """Token (or learned position) embedding table (num, D)."""

    def __init__(self, num: int, d: int, names, std: float, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.embedding = make_param(rngs, normal(std), (num, d), tuple(names), param_dtype)
        self.names = tuple(names)
        self.dtype = dtype

    def __call__(self, ids: jax.Array) -> jax.Array:
        # Gather from a table whose embed dim is gathered first (only the vocab
        # dim stays sharded): SPMD then partitions the lookup as masked local
        # gathers + an all-reduce instead of replicating the whole table.
        table = constrain(self.embedding[...], (self.names[0], None))
        return jnp.take(table, ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied output projection: x [.., D] @ embedding.T -> [.., V]."""
        return jnp.einsum("...d,vd->...v", x.astype(self.dtype), self.embedding[...].astype(self.dtype))


def sinusoidal_positions(positions: jax.Array, d: int) -> jax.Array:
    """Fixed (Vaswani et al.) embeddings, first half sin, second half cos:
    positions [...] int -> [..., d] float32."""
    half = d // 2
    inv = 1.0 / (10000.0 ** (jnp.arange(half, dtype=jnp.float32) / max(half, 1)))
    ang = positions.astype(jnp.float32)[..., None] * inv
    out = jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1)
    if d % 2:
        out = jnp.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, 1)])
    return out


# --------------------------------------------------------------------------- relative position bias
def relative_position_bucket(relative_position: jax.Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jax.Array:
    """T5's bucketing of (key position - query position), exactly HF T5's
    `_relative_position_bucket`: half the buckets for exact small distances,
    the rest logarithmic up to max_distance; in the bidirectional case the
    upper half of the buckets is for keys after the query."""
    rp = relative_position.astype(jnp.int32)
    buckets = jnp.zeros_like(rp)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (rp > 0).astype(jnp.int32) * num_buckets
        rp = jnp.abs(rp)
    else:
        rp = -jnp.minimum(rp, 0)
    max_exact = num_buckets // 2
    is_small = rp < max_exact
    # float32 like torch; log(0) is never selected (is_small), guard it anyway.
    rp_f = jnp.maximum(rp, 1).astype(jnp.float32)
    large = max_exact + (
        jnp.log(rp_f / max_exact) / np.float32(math.log(max_distance / max_exact)) * (num_buckets - max_exact)
    ).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(is_small, rp, large)


ONE_HOT_MAX = 1 << 24   # RelativePositionBias: largest one-hot (elements) it builds on CPU (64 MiB)


class RelativePositionBias(nnx.Module):
    """One (buckets, H) table per stack, used by every layer of that stack (the
    bias is computed once per forward pass and passed to all layers, like HF's
    first-layer `relative_attention_bias`)."""

    def __init__(self, num_buckets: int, max_distance: int, num_heads: int, d_model: int, *,
                 bidirectional: bool, param_dtype, rngs: nnx.Rngs):
        self.embedding = make_param(rngs, normal(d_model ** -0.5), (num_buckets, num_heads),
                                    ("relpos_buckets", "heads"), param_dtype)
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional

    def __call__(self, q_pos: jax.Array, k_pos: jax.Array, bidirectional: bool | None = None) -> jax.Array:
        """q_pos [Lq] or [B, Lq], k_pos [Lk] -> bias [1 or B, H, Lq, Lk] float32."""
        bidir = self.bidirectional if bidirectional is None else bidirectional
        if q_pos.ndim == 1:
            q_pos = q_pos[None]
        rel = k_pos[None, None, :] - q_pos[:, :, None]                          # [B, Lq, Lk]
        bucket = relative_position_bucket(rel, bidir, self.num_buckets, self.max_distance)
        table = self.embedding[...].astype(jnp.float32)                            # [buckets, H]
        if jax.default_backend() == "cpu" and bucket.size * self.num_buckets <= ONE_HOT_MAX:
            # as a one-hot matmul: its gradient is a dot too.  The gather's gradient is a scatter
            # whose [B*Lq*Lk, H] transpose cost ~4% of a T5.1.1-small train step on XLA:CPU.
            # Exact: each output is 1.0 x one table entry plus zeros.
            one_hot = jax.nn.one_hot(bucket, self.num_buckets, dtype=jnp.float32)   # [B, Lq, Lk, buckets]
            return jnp.einsum("bqkn,nh->bhqk", one_hot, table)
        return jnp.transpose(jnp.take(table, bucket, axis=0), (0, 3, 1, 2))        # [B, H, Lq, Lk]


# --------------------------------------------------------------------------- MLP
ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),   # HF "gelu_new" (tanh approximation)
    "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
    "linear": lambda x: x,
}


class Mlp(nnx.Module):
    """T5 feed-forward.  One activation -> `wi` (T5.1.0 ReLU: wo(relu(wi x)));
    several -> `wi_0`, `wi_1`, ... multiplied together (T5.1.1 gated-GELU:
    wo(gelu(wi_0 x) * wi_1 x)).  Dropout after the activation, as HF."""

    def __init__(self, d_model: int, d_ff: int, activations: tuple[str, ...], *, dtype, param_dtype,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.activations = tuple(activations)
        self.wi_names = ("wi",) if len(self.activations) == 1 else tuple(f"wi_{i}" for i in range(len(self.activations)))
        for name in self.wi_names:
            setattr(self, name, Dense((d_model,), (d_ff,), ("embed", "mlp"), d_model ** -0.5, **kw))
        self.wo = Dense((d_ff,), (d_model,), ("mlp", "embed"), d_ff ** -0.5, **kw)

    def __call__(self, x, *, dropout_rate=0.0, key=None, deterministic=True):
        h = None
        for name, act in zip(self.wi_names, self.activations):
            a = ACTIVATIONS[act](getattr(self, name)(x))
            h = a if h is None else h * a
        h = constrain(h, ("batch", "length", "act_mlp"))
        h = dropout(h, dropout_rate, key, deterministic)
        return constrain(self.wo(h), ("batch", "length", "act_embed"))


# --------------------------------------------------------------------------- masks
def padding_or_segments(tokens, segment_ids):
    """Segment ids if given, else (tokens != 0) as one segment. [B, L] int32."""
    if segment_ids is not None:
        return segment_ids.astype(jnp.int32)
    return (tokens != 0).astype(jnp.int32)


def attention_mask(q_seg, k_seg, *, causal=False, bidirectional_q=None, bidirectional_k=None, key_valid=None):
    """Boolean attention mask [B, 1, Lq, Lk].

    q_seg / k_seg: segment ids [B, Lq] / [B, Lk] (attention only within a
    packed example).  causal: key position <= query position, OR-ed with the
    prefix-LM "fully visible" block where both positions have
    decoder_causal_attention == 1.  key_valid [B, Lk]: keys that exist."""
    m = q_seg[:, :, None] == k_seg[:, None, :]
    if causal:
        lq, lk = q_seg.shape[1], k_seg.shape[1]
        c = jnp.arange(lq)[:, None] >= jnp.arange(lk)[None, :]
        c = jnp.broadcast_to(c, m.shape)
        if bidirectional_q is not None:
            c = c | (bidirectional_q[:, :, None].astype(bool) & bidirectional_k[:, None, :].astype(bool))
        m = m & c
    if key_valid is not None:
        m = m & key_valid[:, None, :].astype(bool)
    return m[:, None]
