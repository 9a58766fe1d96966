"""BERT's heads on the encoder-only model (Devlin et al. 2019), pooled per packed example.

The blocks stay this codebase's T5-style encoder blocks (pre-norm RMS norm, no biases;
models/networks.py).  What BERT adds, and where it lives (logical axes in brackets):

    token_type_embedder/embedding  (type_vocab_size, E)  [abspos, embed]  segment A = 0 / B = 1, added to
                                   the token (+ position) embedding (networks._Network; type_vocab_size > 0)
    pooler/{kernel (D, D) [embed, mlp], bias (D,) [mlp]}  dense + tanh on an example's first position
                                   ([CLS]); built with nsp_head, or for a classifier with
                                   classifier_pooling="first" only (BERT fine-tunes its pretrained pooler)
    nsp_head/{kernel (D, 2) [mlp, classes], bias (2,) [classes]}  next-sentence prediction (class 1 =
                                   IsNext) on the pooled vector; nsp_head and num_classes == 0 only
    classifier/{kernel (D, C) [embed, classes], bias (C,) [classes]}  num_classes > 0

An encoder classifier (num_classes > 0) has neither pretraining head: no MLM output
(encoder/logits_dense) and no nsp_head, so fine-tuning from a pretraining checkpoint drops them
(t5x_lite/train/finetune_init.py) and its checkpoints hold only what it uses.

Packed rows: a row holds several examples (encoder_segment_ids 1, 2, ...; positions restarting at
0).  Every head here is evaluated per POSITION -- position t gets its own example's pooled vector --
and the objectives read it at the examples' first positions (`example_starts`), so NSP and
classification work on packed batches as well as on one example per row:
    "first"   the hidden state at the position itself (read at the example's first token, [CLS]),
              then the pooler (dense + tanh);
    "mean"    the mean of the hidden states over the position's example (no pooler).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from t5x_lite.models.config import ModelConfig
from t5x_lite.models.layers import DTYPES, Dense, make_param

NSP_CLASSES = 2   # 0 = NotNext (segment B from another document), 1 = IsNext


class Affine(Dense):
    """x @ kernel + bias (a Dense with a bias; the param paths are <name>/kernel and <name>/bias)."""

    def __init__(self, d_in: int, d_out: int, names, *, dtype, param_dtype, rngs: nnx.Rngs):
        super().__init__((d_in,), (d_out,), names, d_in ** -0.5, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.bias = make_param(rngs, jax.nn.initializers.zeros, (d_out,), (names[-1],), param_dtype)

    def __call__(self, x):
        return super().__call__(x) + self.bias[...].astype(self.dtype)


def has_pooler(cfg: ModelConfig) -> bool:
    if cfg.num_classes > 0:   # a classifier: only for "first" pooling
        return cfg.classifier_pooling == "first"
    return bool(cfg.nsp_head)


def has_nsp_head(cfg: ModelConfig) -> bool:
    return bool(cfg.nsp_head) and cfg.num_classes == 0


def has_mlm_output(cfg: ModelConfig) -> bool:
    """Every model predicts tokens except an encoder_only classifier."""
    return cfg.architecture != "encoder_only" or cfg.num_classes <= 0


def init_heads(net, cfg: ModelConfig, rngs: nnx.Rngs) -> None:
    """Create the pooler / nsp_head / classifier attributes of an EncoderOnly `net`."""
    kw = dict(dtype=DTYPES[cfg.dtype], param_dtype=DTYPES[cfg.param_dtype], rngs=rngs)
    d = cfg.d_model
    if has_pooler(cfg):
        net.pooler = Affine(d, d, ("embed", "mlp"), **kw)
    if has_nsp_head(cfg):
        net.nsp_head = Affine(d, NSP_CLASSES, ("mlp", "classes"), **kw)
    if cfg.num_classes > 0:
        net.classifier = Affine(d, cfg.num_classes, ("embed", "classes"), **kw)


def head_params(cfg: ModelConfig) -> int:
    """Parameters of the heads above (token types excluded: they are embeddings)."""
    d, n = cfg.d_model, 0
    if has_pooler(cfg):
        n += d * d + d
    if has_nsp_head(cfg):
        n += d * NSP_CLASSES + NSP_CLASSES
    if cfg.num_classes > 0:
        n += d * cfg.num_classes + cfg.num_classes
    return n


def head_flops(cfg: ModelConfig, length: int) -> float:
    """Forward FLOPs of the heads, evaluated at every position (as the code does)."""
    return 2.0 * length * head_params(cfg)


# --------------------------------------------------------------------------- pooling per packed example
def positions_or_arange(tokens, positions):
    if positions is not None:
        return positions.astype(jnp.int32)
    return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)


def example_starts(seg, positions) -> jax.Array:
    """bool [B, L]: the first position of every (packed) example; never padding."""
    return (positions == 0) & (seg > 0)


def _mean_per_example(y, seg):
    """[B, L, D]: at each position, the mean of y over the tokens of its example."""
    same = ((seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)).astype(jnp.float32)
    total = jnp.einsum("bqk,bkd->bqd", same, y.astype(jnp.float32))
    return total / jnp.maximum(jnp.sum(same, axis=-1, keepdims=True), 1.0)


def pooled(net, y, seg, pooling: str):
    """The pooled vector of each position's example [B, L, D] (see the module docstring)."""
    if pooling == "mean":
        return _mean_per_example(y, seg).astype(y.dtype)
    return jnp.tanh(net.pooler(y))


def nsp_logits(net, y, seg):
    """float32 [B, L, 2] next-sentence logits (read them at example_starts)."""
    return net.nsp_head(pooled(net, y, seg, "first")).astype(jnp.float32)


def class_logits(net, y, seg):
    """float32 [B, L, num_classes] class logits (read them at example_starts)."""
    return net.classifier(pooled(net, y, seg, net.pooling)).astype(jnp.float32)
