"""T5 multi-head attention (Vaswani et al. 2017, as in Raffel et al. 2020): the
query/key/value/output projections, the score/softmax/context core with T5's
relative position bias and boolean masks, and the choice of implementation.

Shape letters: B batch, Lq / Lk query / key lengths, D d_model, H heads, K d_kv.
No 1/sqrt(d_kv) scaling anywhere: T5 folds it into the query initialisation.

The einsum core has a hand-written gradient (`_attention_core`).  It is the
same math as JAX's autodiff of the forward pass (softmax backward
p * (dp - sum(dp * p))), arranged so XLA:CPU runs it faster: autodiff's graph
materialised [B, H, Lq, Lk] broadcasts of the softmax denominators and ran
the key/value gradients as transposed-operand products (docs/performance.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from t5x_lite.errors import UserError
from t5x_lite.models.layers import Dense, apply_keep, constrain, dropout_keep

# Masked attention logits get this value (finite, so a fully masked row gives a
# uniform distribution instead of NaN; such rows are padding and carry no loss).
BIG_NEG = float(np.finfo(np.float32).min)

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


# --------------------------------------------------------------------------- the shared bias
def _batch_sum(g):
    """g [B, ...] -> [1, ...]: the sum over the leading axis as a tree of slice additions."""
    parts = [g[i:i + 1] for i in range(g.shape[0])]
    while len(parts) > 1:
        parts = [a + b for a, b in zip(parts[::2], parts[1::2])] + parts[len(parts) - len(parts) % 2:]
    return parts[0]


def _slice_sum_on_cpu(batch: int) -> bool:
    return 1 < batch <= 64 and jax.default_backend() == "cpu"


def bias_gradient(g, bias_shape):
    """The gradient of a bias broadcast over the batch, from the scores' gradient g [B, H, Lq, Lk].
    On CPU the batch sum is written as slice additions: XLA:CPU's fused reduction over the
    leading axis (YNN fusions) took ~40x longer for T5.1.1-small's [2, 6, 512, 512] (about 8% of
    the train step; docs/performance.md).  Same value, summed in another order."""
    if bias_shape[0] == g.shape[0]:
        return g
    if _slice_sum_on_cpu(g.shape[0]):
        return _batch_sum(g)
    return jnp.sum(g, axis=0, keepdims=True)


# --------------------------------------------------------------------------- the einsum core
def _probabilities(scores, bias, mask, dtype, keep, rate):
    """scores [B, H, Lq, Lk] -> float32 softmax probabilities p (bias and mask in float32), and the
    probabilities the context products use (cast to `dtype`, dropout applied)."""
    scores = scores.astype(jnp.float32)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = jnp.where(mask, scores, BIG_NEG)
    p = jax.nn.softmax(scores, axis=-1)
    return p, apply_keep(p.astype(dtype), keep, rate)


def _attention_forward(q, k, v, bias, mask, keep, rate):
    """-> context [B, Lq, H, K], and _probabilities' two outputs."""
    p, probs = _probabilities(jnp.einsum("bqhk,bthk->bhqt", q, k), bias, mask, q.dtype, keep, rate)
    return jnp.einsum("bhqt,bthk->bqhk", probs, v), p, probs


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _attention_core(q, k, v, bias, mask, keep, rate):
    return _attention_forward(q, k, v, bias, mask, keep, rate)[0]


def _attention_core_fwd(q, k, v, bias, mask, keep, rate):
    ctx, p, probs = _attention_forward(q, k, v, bias, mask, keep, rate)
    return ctx, (q, k, v, p, probs, mask, keep, bias)


def _attention_core_bwd(rate, res, d_ctx):
    q, k, v, p, probs, mask, keep, bias = res
    d_v = jnp.einsum("bqhk,bhqt->bhkt", d_ctx, probs)                             # [B, H, K, Lk]
    d_probs = apply_keep(jnp.einsum("bqhk,bthk->bhqt", d_ctx, v), keep, rate)
    d_p = d_probs.astype(jnp.float32)
    d_scores = p * (d_p - jnp.sum(d_p * p, axis=-1, keepdims=True))               # softmax backward
    if mask is not None:
        d_scores = jnp.where(mask, d_scores, 0.0)
    d_bias = None if bias is None else bias_gradient(d_scores, bias.shape)
    d_s = d_scores.astype(q.dtype)
    d_q = jnp.einsum("bhqt,bthk->bqhk", d_s, k)
    d_k = jnp.einsum("bqhk,bhqt->bhkt", q, d_s)                                   # [B, H, K, Lk]
    # [B, H, K, Lk] outputs then a small transpose: XLA:CPU ran the products with Lk as the
    # output's row axis (a transposed left operand) about 2.5x slower
    return (d_q, jnp.transpose(d_k, (0, 3, 1, 2)), jnp.transpose(d_v, (0, 3, 1, 2)), d_bias, None, None)


_attention_core.defvjp(_attention_core_fwd, _attention_core_bwd)


def dot_product_attention(q, k, v, bias, mask, *, dropout_rate=0.0, key=None, deterministic=True,
                          kv_heads_first=False):
    """q [B, Lq, H, K], k/v [B, Lk, H, K] (kv_heads_first: [B, H, Lk, K], the layout the score and
    context products take without a transpose), bias [1|B, H, Lq, Lk] float32 or None,
    mask [B, 1|H, Lq, Lk] bool or None -> [B, Lq, H, K].  Softmax, bias and mask in float32."""
    keep = None
    if not deterministic and dropout_rate > 0.0:
        if key is None:
            raise ValueError("dropout needs a dropout_rng key when deterministic=False and dropout_rate > 0")
        keep = dropout_keep(key, dropout_rate, (q.shape[0], q.shape[2], q.shape[1],
                                                k.shape[2] if kv_heads_first else k.shape[1]))
    if kv_heads_first:
        return _attention_kv_heads_first(q, k, v, bias, mask, keep, dropout_rate)
    return _attention_core(q, k, v, bias, mask, keep, dropout_rate)


def _attention_kv_heads_first(q, k, v, bias, mask, keep, rate):
    """dot_product_attention with k/v [B, H, Lk, K] (the decode cache's encoder side), as products
    over ONE merged batch axis B*H.  With several queries per example (beam search attends an
    example's G beams as G query positions) XLA:CPU ran the two-batch-axis form ([B, H] batch,
    G x Lk scores) about 2x slower (docs/performance.md); one query is as fast either way."""
    b, lq, h, d = q.shape
    lk = k.shape[2]
    qh = jnp.transpose(q, (0, 2, 1, 3)).reshape(b * h, lq, d)                      # [B*H, Lq, K]
    scores = jnp.einsum("xqk,xtk->xqt", qh, k.reshape(b * h, lk, d)).reshape(b, h, lq, lk)
    _, probs = _probabilities(scores, bias, mask, q.dtype, keep, rate)
    probs = probs.reshape(b * h, lq, lk)
    ctx = jnp.einsum("xqt,xtk->xqk", probs, v.reshape(b * h, lk, d))               # [B*H, Lq, K]
    return jnp.transpose(ctx.reshape(b, h, lq, d), (0, 2, 1, 3))                   # [B, Lq, H, K]


# --------------------------------------------------------------------------- fused
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


# --------------------------------------------------------------------------- the layer
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
