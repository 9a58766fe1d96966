"""ELECTRA (Clark et al. 2020): a small MLM generator and a full-size discriminator trained
to tell which tokens the generator replaced ("replaced token detection", RTD).

The blocks are this codebase's T5-style encoder blocks (pre-norm RMS norm, no biases;
models/networks.py), not BERT's post-LayerNorm blocks with biases.  What follows the paper:

* Generator width: d_model, num_heads and d_ff of the discriminator times
  `electra_generator_size` (default 1/4), the same number of layers (num_encoder_layers)
  and the same d_kv (ELECTRA-Small: 4 heads of 64 -> 1 head of 64).
* Shared embeddings (the paper's "tied" setting): ONE token table, and one learned
  position table when position_embedding="learned", both of the discriminator's
  embedding width E (model.embedding_size, or d_model when 0), and the token type table
  when type_vocab_size > 0 (models/networks.py _Network.embed_tokens sums them).  Each network projects
  the embedding sum into its own width with its own linear map when the widths differ
  (`embedding_projection`, E -> D, and `generator/embedding_projection`, E -> D_gen), as
  the ELECTRA code does for ELECTRA-Small (E=128, D=256, D_gen=64).
* Generator output: BERT's MLM head, dense D_gen -> E + GELU + norm, then the TIED
  output projection onto the shared token table (scaled by E**-0.5, because T5-style
  tables are initialised with std 1) plus a per-token output bias.  model.tie_embeddings
  is not read by electra (the generator is always tied, as in the paper).
* Discriminator head: dense D -> D + GELU + dense D -> 1 (one logit per token), as the
  ELECTRA code's discriminator head.

Parameter tree (pure dict paths).  The discriminator sits at the TOP LEVEL with exactly
EncoderOnly's names, so an encoder_only model of the same config loads it by name:

    token_embedder/embedding                      (V, E)   shared with the generator
    position_embedder/embedding                   (P, E)   shared (learned positions only)
    token_type_embedder/embedding                 (T, E)   shared (type_vocab_size T > 0 only)
    embedding_projection/kernel                   (E, D)   only when E != D
    encoder/layers_i/..., encoder/encoder_norm/scale, encoder/relpos_bias (relative only)
    rtd_head/dense/kernel (D, D), rtd_head/out/kernel (D, 1), rtd_head/bias (1,)
    generator/embedding_projection/kernel         (E, D_gen)   only when E != D_gen
    generator/encoder/layers_i/..., generator/encoder/encoder_norm/scale
    generator/mlm_head/dense/kernel (D_gen, E), generator/mlm_head/norm/scale (E,),
    generator/mlm_head/bias (V,)

The training objective (masking, sampling, the loss) is t5x_lite/train/electra_objective.py;
this module holds the networks, `replace_tokens` (the corruption the discriminator
sees) and the parameter/FLOP counts.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from t5x_lite.errors import UserError
from t5x_lite.models.config import ModelConfig
from t5x_lite.models.layers import (ACTIVATIONS, DTYPES, Dense, RMSNorm, attention_mask, constrain, make_param,
                                    padding_or_segments)
from t5x_lite.models.networks import Stack, _Network, _relpos, embedding_width

_gelu = ACTIVATIONS["gelu_exact"]


def generator_config(cfg: ModelConfig) -> ModelConfig:
    """The generator's stack config: d_model, num_heads and d_ff scaled by
    electra_generator_size (rounded, at least 1), everything else the discriminator's."""
    f = float(cfg.electra_generator_size)
    if not 0.0 < f <= 1.0:
        raise UserError(f"model.electra_generator_size must be in (0, 1], got {cfg.electra_generator_size!r}")
    d, h, ff = (max(1, round(int(x) * f)) for x in (cfg.d_model, cfg.num_heads, cfg.d_ff))
    return dataclasses.replace(cfg, d_model=d, num_heads=h, d_ff=ff, architecture="encoder_only",
                               embedding_size=embedding_width(cfg), tie_embeddings=False, num_classes=0)


class MlmHead(nnx.Module):
    """Generator output: dense (D_gen -> E) + GELU + norm, tied to the shared token table, + bias."""

    def __init__(self, d: int, e: int, vocab: int, *, eps, dtype, param_dtype, rngs: nnx.Rngs):
        self.dense = Dense((d,), (e,), ("embed", "embed_factor"), d ** -0.5, dtype=dtype, param_dtype=param_dtype,
                           rngs=rngs)
        self.norm = RMSNorm(e, eps=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.bias = make_param(rngs, jax.nn.initializers.zeros, (vocab,), ("vocab",), param_dtype)
        self.e = e

    def __call__(self, h, table):
        x = self.norm(_gelu(self.dense(h)))
        out = jnp.einsum("...e,ve->...v", x * (self.e ** -0.5), table.astype(x.dtype))
        out = constrain(out, ("batch", "length", "act_vocab"))
        return out.astype(jnp.float32) + self.bias[...].astype(jnp.float32)


class RtdHead(nnx.Module):
    """Discriminator output: dense (D -> D) + GELU + dense (D -> 1) + bias -> one logit per token."""

    def __init__(self, d: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dense = Dense((d,), (d,), ("embed", "mlp"), d ** -0.5, **kw)
        self.out = Dense((d,), (1,), ("mlp", "classes"), d ** -0.5, **kw)
        self.bias = make_param(rngs, jax.nn.initializers.zeros, (1,), ("classes",), param_dtype)

    def __call__(self, y):
        out = self.out(_gelu(self.dense(y))) + self.bias[...].astype(y.dtype)
        return out[..., 0].astype(jnp.float32)


class Generator(nnx.Module):
    """The small MLM encoder; reads the shared embedding sum [B, L, E] its parent computes."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        g = generator_config(cfg)
        dtype, pdtype = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
        e = embedding_width(cfg)
        if e != g.d_model:
            self.embedding_projection = Dense((e,), (g.d_model,), ("embed_factor", "embed"), e ** -0.5, dtype=dtype,
                                              param_dtype=pdtype, rngs=rngs)
        self.encoder = Stack(g, kind="encoder", num_layers=cfg.num_encoder_layers, cross_attention=False,
                             logits=False, bidirectional=True, rngs=rngs)
        self.mlm_head = MlmHead(g.d_model, e, cfg.vocab_size, eps=cfg.layer_norm_epsilon, dtype=dtype,
                                param_dtype=pdtype, rngs=rngs)

    def __call__(self, emb, mask, table, *, key=None, deterministic=True):
        x = self.embedding_projection(emb) if hasattr(self, "embedding_projection") else emb
        x = constrain(x, ("batch", "length", "act_embed"))
        length = emb.shape[1]
        y = self.encoder(x, self_bias=_relpos(self.encoder, length, length, True), self_mask=mask, key=key,
                         deterministic=deterministic)
        return self.mlm_head(y, table)


class Electra(_Network):
    """Generator + discriminator.  __call__ is the discriminator alone (RTD logits [B, L] of
    encoder_input_tokens, what a trained ELECTRA is used as); `generator_logits` is the
    generator's MLM; `discriminate` runs the discriminator on given tokens."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self._init_embeddings(cfg, rngs)
        pdtype = DTYPES[cfg.param_dtype]
        self.encoder = Stack(cfg, kind="encoder", num_layers=cfg.num_encoder_layers, cross_attention=False,
                             logits=False, bidirectional=True, rngs=rngs)
        self.rtd_head = RtdHead(cfg.d_model, dtype=self.dtype, param_dtype=pdtype, rngs=rngs)
        self.generator = Generator(cfg, rngs)

    @staticmethod
    def _mask(tokens, segment_ids):
        seg = padding_or_segments(tokens, segment_ids)
        return attention_mask(seg, seg, key_valid=seg != 0)

    def generator_logits(self, tokens, segment_ids=None, positions=None, token_types=None, *, key=None,
                         deterministic=True):
        """Generator MLM logits [B, L, V] float32 of the (masked) tokens."""
        emb = self.embed_tokens(tokens, positions, token_types)
        return self.generator(emb, self._mask(tokens, segment_ids), self.token_embedder.embedding[...], key=key,
                              deterministic=deterministic)

    def discriminate(self, tokens, segment_ids=None, positions=None, token_types=None, *, key=None,
                     deterministic=True):
        """Discriminator RTD logits [B, L] float32 (> 0: "replaced")."""
        length = tokens.shape[1]
        y = self.encoder(self.embed(tokens, positions, token_types), self_bias=_relpos(self.encoder, length, length, True),
                         self_mask=self._mask(tokens, segment_ids), key=key, deterministic=deterministic)
        return self.rtd_head(y)

    def __call__(self, batch, *, deterministic=True, dropout_rng=None):
        return self.discriminate(batch["encoder_input_tokens"], batch.get("encoder_segment_ids"),
                                 batch.get("encoder_positions"), batch.get("encoder_token_type_ids"), key=dropout_rng,
                                 deterministic=deterministic)


def replace_tokens(key, gen_logits, originals, masked):
    """The discriminator's input and labels.

    At the masked positions (masked [B, L] bool), a token is sampled from the generator's
    softmax (temperature 1; id 0, padding, excluded); elsewhere the original stays.  The
    samples are integers under jax.lax.stop_gradient: no gradient reaches the generator
    through them.  labels = (input != original): a sample equal to the original counts as
    original, as in the paper.  -> (inputs [B, L] int32, labels [B, L] bool)."""
    logits = jax.lax.stop_gradient(gen_logits.astype(jnp.float32))
    logits = logits.at[..., 0].set(-jnp.inf)
    sampled = jax.lax.stop_gradient(jax.random.categorical(key, logits, axis=-1).astype(jnp.int32))
    originals = originals.astype(jnp.int32)
    inputs = jnp.where(masked, sampled, originals)
    return inputs, inputs != originals
