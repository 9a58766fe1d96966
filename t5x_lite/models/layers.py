"""T5 building blocks in Flax NNX: RMS layer norm, dense kernels with logical
axis names, multi-head attention, relative position biases, MLP, embeddings,
dropout with explicit keys, and attention masks.

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

from t5x_lite.errors import UserError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Masked attention logits get this value (finite, so a fully masked row gives a
# uniform distribution instead of NaN; such rows are padding and carry no loss).
BIG_NEG = float(np.finfo(np.float32).min)


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


# --------------------------------------------------------------------------- attention
# model.attention_impl: "einsum" is dot_product_attention below (the HF-parity path);
# "xla" / "cudnn" call jax.nn.dot_product_attention with that implementation;
# "auto" picks per call (resolve_attention_impl).
ATTENTION_IMPLS = ("auto", "einsum", "xla", "cudnn")
_CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def resolve_attention_impl(impl: str, q, k, *, dropout_active: bool) -> str:
    """The implementation one attention call runs (q [B, Lq, H, K], k [B, Lk, H, K]).

    Attention-probability dropout is only in the einsum path, so any choice
    falls back to "einsum" for a call with dropout active.  "auto" is "cudnn"
    when the backend is GPU, the compute dtype bfloat16/float16, the head width
    a multiple of 8 and <= 128 and both lengths even (cuDNN flash attention's
    shape limits with a bias), else "einsum" (the CPU default)."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention_impl {impl!r}; one of {'|'.join(ATTENTION_IMPLS)}")
    if dropout_active:
        return "einsum"
    if impl != "auto":
        return impl
    lq, lk, d_kv = q.shape[1], k.shape[1], q.shape[-1]
    if (jax.default_backend() == "gpu" and jnp.dtype(q.dtype) in _CUDNN_DTYPES and d_kv % 8 == 0
            and d_kv <= 128 and lq % 2 == 0 and lk % 2 == 0):
        return "cudnn"
    return "einsum"


def _batch_sum(g):
    """g [B, ...] -> [1, ...]: the sum over the leading axis as a tree of slice additions."""
    parts = [g[i:i + 1] for i in range(g.shape[0])]
    while len(parts) > 1:
        parts = [a + b for a, b in zip(parts[::2], parts[1::2])] + parts[len(parts) - len(parts) % 2:]
    return parts[0]


@jax.custom_vjp
def _add_bias_cpu(scores, bias):
    return scores + bias


def _add_bias_fwd(scores, bias):
    return scores + bias, None


def _add_bias_bwd(_, g):
    return g, _batch_sum(g)


_add_bias_cpu.defvjp(_add_bias_fwd, _add_bias_bwd)


def add_shared_bias(scores, bias):
    """scores [B, H, Lq, Lk] + bias [1|B, H, Lq, Lk].  The relative position bias is shared by the
    batch, so its gradient sums the scores' gradient over B.  On CPU that sum is written as
    slice additions: XLA:CPU's fused reduction over the leading axis (YNN fusions) took ~40x longer
    for T5.1.1-small's [2, 6, 512, 512] (about 8% of the train step; docs/performance.md).  Same
    value and gradient, summed in another order."""
    b = scores.shape[0]
    if bias.shape[0] == 1 and 1 < b <= 64 and jax.default_backend() == "cpu":
        return _add_bias_cpu(scores, bias)
    return scores + bias


def dot_product_attention(q, k, v, bias, mask, *, dropout_rate=0.0, key=None, deterministic=True,
                          kv_heads_first=False):
    """q [B, Lq, H, K], k/v [B, Lk, H, K] (kv_heads_first: [B, H, Lk, K], the layout the score and
    context products take without a transpose), bias [1|B, H, Lq, Lk] float32 or None,
    mask [B, 1|H, Lq, Lk] bool or None -> [B, Lq, H, K].

    No 1/sqrt(d_kv) scaling: T5 folds it into the query initialisation."""
    if kv_heads_first:
        return _attention_kv_heads_first(q, k, v, bias, mask, dropout_rate, key, deterministic)
    scores = jnp.einsum("bqhk,bthk->bhqt", q, k)
    probs = _attention_probs(scores, bias, mask, q.dtype, dropout_rate, key, deterministic)
    return jnp.einsum("bhqt,bthk->bqhk", probs, v)


def _attention_probs(scores, bias, mask, dtype, dropout_rate, key, deterministic):
    """[B, H, Lq, Lk] scores -> softmax probabilities in `dtype` (float32 bias, mask and softmax)."""
    scores = scores.astype(jnp.float32)
    if bias is not None:
        scores = add_shared_bias(scores, bias)
    if mask is not None:
        scores = jnp.where(mask, scores, BIG_NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    return dropout(probs, dropout_rate, key, deterministic)


def _attention_kv_heads_first(q, k, v, bias, mask, dropout_rate, key, deterministic):
    """dot_product_attention with k/v [B, H, Lk, K] (the decode cache's encoder side), as products
    over ONE merged batch axis B*H.  With several queries per example (beam search attends an
    example's G beams as G query positions) XLA:CPU ran the two-batch-axis form ([B, H] batch,
    G x Lk scores) about 2x slower (docs/performance.md); one query is as fast either way."""
    b, lq, h, d = q.shape
    lk = k.shape[2]
    qh = jnp.transpose(q, (0, 2, 1, 3)).reshape(b * h, lq, d)                      # [B*H, Lq, K]
    scores = jnp.einsum("xqk,xtk->xqt", qh, k.reshape(b * h, lk, d))
    probs = _attention_probs(scores.reshape(b, h, lq, lk), bias, mask, q.dtype, dropout_rate, key,
                             deterministic).reshape(b * h, lq, lk)
    ctx = jnp.einsum("xqt,xtk->xqk", probs, v.reshape(b * h, lk, d))               # [B*H, Lq, K]
    return jnp.transpose(ctx.reshape(b, h, lq, d), (0, 2, 1, 3))                   # [B, Lq, H, K]


def fused_dot_product_attention(q, k, v, bias, mask, *, implementation: str):
    """The same attention (no dropout) through jax.nn.dot_product_attention:
    our [B, L, H, K] is its [B, T, N, H] layout, scale=1.0 (T5), the float32
    relative position bias is added to the logits and the boolean mask selects
    them.  A fully masked query row (padding) gets a finite large negative
    value in every logit, so a uniform softmax as in the einsum path, not NaN.
    cuDNN needs the bias in the compute dtype (it folds the mask into it)."""
    if implementation == "cudnn":
        if jax.default_backend() != "gpu":
            raise UserError(f"model.attention_impl='cudnn' needs a GPU backend, this one is "
                            f"{jax.default_backend()!r}; use auto, einsum or xla")
        if bias is not None:
            bias = bias.astype(q.dtype)
    return jax.nn.dot_product_attention(q, k, v, bias, mask, scale=1.0, implementation=implementation)


class MultiHeadAttention(nnx.Module):
    """T5 attention: query/key/value kernels (D, H, K), output kernel (H, K, D).
    Init follows Mesh-TF/HF T5: query std (D*K)**-0.5 (the folded 1/sqrt(K)),
    key/value std D**-0.5, out std (H*K)**-0.5."""

    def __init__(self, d_model: int, num_heads: int, d_kv: int, *, dtype, param_dtype, rngs: nnx.Rngs,
                 attention_impl: str = "einsum"):
        if attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention_impl {attention_impl!r}; one of {'|'.join(ATTENTION_IMPLS)}")
        D, H, K = d_model, num_heads, d_kv
        self.attention_impl = attention_impl
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.query = Dense((D,), (H, K), ("embed", "heads", "kv"), (D * K) ** -0.5, **kw)
        self.key = Dense((D,), (H, K), ("embed", "heads", "kv"), D ** -0.5, **kw)
        self.value = Dense((D,), (H, K), ("embed", "heads", "kv"), D ** -0.5, **kw)
        self.out = Dense((H, K), (D,), ("heads", "kv", "embed"), (H * K) ** -0.5, **kw)

    def project_q(self, x):
        return constrain(self.query(x), ("batch", "length", "act_heads", "act_kv"))

    def project_kv(self, x):
        k = constrain(self.key(x), ("batch", "length", "act_heads", "act_kv"))
        v = constrain(self.value(x), ("batch", "length", "act_heads", "act_kv"))
        return k, v

    def __call__(self, x_q, x_kv, bias, mask, *, dropout_rate=0.0, key=None, deterministic=True):
        q = self.project_q(x_q)
        k, v = self.project_kv(x_kv)
        return self.attend(q, k, v, bias, mask, dropout_rate=dropout_rate, key=key, deterministic=deterministic)

    def attend(self, q, k, v, bias, mask, *, dropout_rate=0.0, key=None, deterministic=True,
               kv_heads_first=False):
        """kv_heads_first: k/v are [B, H, Lk, K] (the decode cache's cross-attention layout)."""
        k_shape = jax.ShapeDtypeStruct((k.shape[0], k.shape[2], k.shape[1], k.shape[3]), k.dtype) \
            if kv_heads_first else k
        impl = resolve_attention_impl(self.attention_impl, q, k_shape,
                                      dropout_active=not deterministic and dropout_rate > 0.0)
        if impl == "einsum":
            ctx = dot_product_attention(q, k, v, bias, mask, dropout_rate=dropout_rate, key=key,
                                        deterministic=deterministic, kv_heads_first=kv_heads_first)
        else:
            if kv_heads_first:
                k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
            ctx = fused_dot_product_attention(q, k, v, bias, mask, implementation=impl)
        return constrain(self.out(ctx), ("batch", "length", "act_embed"))


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
