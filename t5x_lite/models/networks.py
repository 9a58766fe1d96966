"""The three networks of the T5 paper's architecture study, in Flax NNX:

    EncoderDecoder  (T5; optionally one shared set of layers, Table 2 "Enc-dec, shared")
    DecoderOnly     (language model with a causal mask, or prefix LM)
    EncoderOnly     (BERT-style: MLM head + optional classification head)

All three are pre-norm T5 stacks: x = x + Dropout(Sublayer(RMSNorm(x))).
Layers of one stack live either as `layers_0 .. layers_{N-1}` (unscanned) or
as one `layers` module whose params have a leading [N] "layers" axis
(scan_layers=True, run with jax.lax.scan).  See models/__init__.py for the
parameter tree and docs/models.md for the design notes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from t5x_lite.errors import UserError
from t5x_lite.models import bert
from t5x_lite.models.config import ModelConfig
from t5x_lite.models.attention import MultiHeadAttention
from t5x_lite.models.layers import (DTYPES, Dense, Embed, Mlp, RelativePositionBias,
                                    RMSNorm, apply_keep, attention_mask, constrain, dropout_keep,
                                    padding_or_segments, sinusoidal_positions)


def _split(key, n):
    return [None] * n if key is None else list(jax.random.split(key, n))


def _residual_masks(key, rate, deterministic, n, shape):
    """Keep-masks [n, *shape] for the n residual-branch dropout sites that share
    x's shape (one random draw), or [None] * n without dropout."""
    if deterministic or rate == 0.0:
        return [None] * n
    if key is None:
        raise ValueError("dropout needs a dropout_rng key when deterministic=False and dropout_rate > 0")
    keep = dropout_keep(key, rate, (n,) + tuple(shape))
    return [keep[i] for i in range(n)]


# --------------------------------------------------------------------------- one layer
class TransformerLayer(nnx.Module):
    """One T5 block.  Encoder blocks name their self-attention `attention` (with
    `pre_attention_layer_norm`); decoder blocks use `self_attention`
    (`pre_self_attention_layer_norm`) and, with cross-attention,
    `encoder_decoder_attention` (`pre_cross_attention_layer_norm`), as T5X."""

    def __init__(self, cfg: ModelConfig, *, kind: str, cross_attention: bool, rngs: nnx.Rngs):
        dtype, pdtype = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
        norm = lambda: RMSNorm(cfg.d_model, eps=cfg.layer_norm_epsilon, dtype=dtype, param_dtype=pdtype, rngs=rngs)
        attn = lambda: MultiHeadAttention(cfg.d_model, cfg.num_heads, cfg.d_kv, dtype=dtype, param_dtype=pdtype,
                                          rngs=rngs, attention_impl=cfg.attention_impl)
        self.kind = kind
        self.has_cross = cross_attention
        self.rate = float(cfg.dropout_rate)
        if kind == "encoder":
            self.pre_attention_layer_norm = norm()
            self.attention = attn()
        else:
            self.pre_self_attention_layer_norm = norm()
            self.self_attention = attn()
            if cross_attention:
                self.pre_cross_attention_layer_norm = norm()
                self.encoder_decoder_attention = attn()
        self.pre_mlp_layer_norm = norm()
        self.mlp = Mlp(cfg.d_model, cfg.d_ff, cfg.mlp_activations, dtype=dtype, param_dtype=pdtype, rngs=rngs)

    def _self(self):
        if self.kind == "encoder":
            return self.pre_attention_layer_norm, self.attention
        return self.pre_self_attention_layer_norm, self.self_attention

    def __call__(self, x, *, self_bias, self_mask, encoded=None, cross_mask=None, key=None, deterministic=True):
        """x [B, L, D] -> [B, L, D].  `encoded` [B, Lin, D] enables cross-attention
        (the shared enc-dec runs its encoder pass through decoder blocks with
        encoded=None, i.e. minus cross-attention)."""
        k = _split(key, 4)
        r, det = self.rate, deterministic
        # residual-branch sites: after self-attention, (cross-attention,) MLP
        res = _residual_masks(k[3], r, det, 3 if encoded is not None else 2, x.shape)
        norm, attn = self._self()
        h = norm(x)
        y = attn(h, h, self_bias, self_mask, dropout_rate=r, key=k[0], deterministic=det)
        x = x + apply_keep(y, res[0], r)
        if encoded is not None:
            h = self.pre_cross_attention_layer_norm(x)
            y = self.encoder_decoder_attention(h, encoded, None, cross_mask, dropout_rate=r, key=k[1],
                                               deterministic=det)
            x = x + apply_keep(y, res[1], r)
        h = self.pre_mlp_layer_norm(x)
        y = self.mlp(h, dropout_rate=r, key=k[2], deterministic=det)
        x = x + apply_keep(y, res[-1], r)
        return constrain(x, ("batch", "length", "act_embed"))

    def cross_kv(self, encoded):
        return self.encoder_decoder_attention.project_kv(encoded)

    def decode(self, x, cache_k, cache_v, write_index, self_bias, self_mask, cross_k=None, cross_v=None,
               cross_mask=None):
        """Cached (inference) pass.  x [B, Lq, D]; cache_k/v [B, Lc, H, K]; the
        new keys/values are written at write_index[b] .. + Lq.  cross_k/v [B/G, H, Lin, K]
        and cross_mask [B/G, 1, 1, Lin]: with beam search (G beams per example, consecutive
        rows) the encoder side is not repeated per beam.  Returns (x, cache_k, cache_v)."""
        norm, attn = self._self()
        h = norm(x)
        q = attn.project_q(h)
        k, v = attn.project_kv(h)
        write = jax.vmap(lambda c, n, i: jax.lax.dynamic_update_slice_in_dim(c, n.astype(c.dtype), i, axis=0))
        cache_k = write(cache_k, k, write_index)
        cache_v = write(cache_v, v, write_index)
        x = x + attn.attend(q, cache_k, cache_v, self_bias, self_mask)
        if cross_k is not None:
            h = self.pre_cross_attention_layer_norm(x)
            q = self.encoder_decoder_attention.project_q(h)                  # [B*G, Lq, H, K]
            bq, lq = q.shape[:2]
            # beam search: G consecutive rows (the beams of one example) share its encoder keys/values
            # [B, H, Lin, K]; their queries attend as G*Lq query positions of that example
            q = q.reshape(cross_k.shape[0], (bq // cross_k.shape[0]) * lq, *q.shape[2:])
            mask = jnp.broadcast_to(cross_mask, (q.shape[0], 1, q.shape[1], cross_mask.shape[-1]))
            y = self.encoder_decoder_attention.attend(q, cross_k, cross_v, None, mask, kv_heads_first=True)
            x = x + y.reshape(bq, lq, y.shape[-1])
        x = x + self.mlp(self.pre_mlp_layer_norm(x))
        return x, cache_k, cache_v


# --------------------------------------------------------------------------- a stack of layers
class Stack(nnx.Module):
    """N layers + the stack's relative position bias table + its final norm
    (`encoder_norm` / `decoder_norm`) + optionally the untied `logits_dense`."""

    def __init__(self, cfg: ModelConfig, *, kind: str, num_layers: int, cross_attention: bool,
                 logits: bool, bidirectional: bool, rngs: nnx.Rngs):
        dtype, pdtype = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
        self.num_layers = num_layers
        self.scan = bool(cfg.scan_layers)
        self.remat_policy = cfg.remat_policy
        self.rate = float(cfg.dropout_rate)
        make = lambda r: TransformerLayer(cfg, kind=kind, cross_attention=cross_attention, rngs=r)
        if self.scan:
            @nnx.split_rngs(splits=num_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
            def make_stacked(r):
                return make(r)
            self.layers = make_stacked(rngs)
        else:
            for i in range(num_layers):
                setattr(self, f"layers_{i}", make(rngs))
        if cfg.position_embedding == "relative":
            self.relpos_bias = RelativePositionBias(
                cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance, cfg.num_heads,
                cfg.d_model, bidirectional=bidirectional, param_dtype=pdtype, rngs=rngs)
        self.norm_name = f"{kind}_norm"
        setattr(self, self.norm_name, RMSNorm(cfg.d_model, eps=cfg.layer_norm_epsilon, dtype=dtype,
                                              param_dtype=pdtype, rngs=rngs))
        if logits:
            self.logits_dense = Dense((cfg.d_model,), (cfg.vocab_size,), ("embed", "vocab"), cfg.d_model ** -0.5,
                                      dtype=dtype, param_dtype=pdtype, rngs=rngs)

    def final_norm(self, x):
        return getattr(self, self.norm_name)(x)

    def run_layers(self, fn, x, xs=None, *, per_layer=False, remat=True):
        """Apply fn(layer, x, xs_i) -> (x, ys_i) over the layers, threading x.
        xs / ys are pytrees with a leading [N] axis, or (per_layer) sequences of N
        pytrees, one per layer: then the unscanned stack neither slices nor stacks
        an [N, ...] array (a copy per layer and call: the decode caches), and a
        scanned one stacks them for the scan and splits its outputs again.  The
        body is a pure function of (layer params, x, xs_i) so jax.checkpoint
        (remat) and jax.lax.scan apply to it directly; both layouts give the
        same numbers.  remat=False: no jax.checkpoint whatever the policy (inference,
        where there is nothing to recompute and its barriers only block fusion)."""

        def body(graphdef, x, inp):
            state, xs_i = inp
            return fn(nnx.merge(graphdef, state), x, xs_i)

        policy = self.remat_policy if remat else "none"
        if policy == "none":
            wrap = lambda f: f
        elif policy == "full":
            wrap = lambda f: jax.checkpoint(f, prevent_cse=not self.scan, static_argnums=(0,))
        elif policy == "dots_saveable":
            wrap = lambda f: jax.checkpoint(f, prevent_cse=not self.scan, static_argnums=(0,),
                                            policy=jax.checkpoint_policies.dots_saveable)
        else:
            raise ValueError(f"unknown remat_policy {policy!r}")
        body = wrap(body)
        stacked = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)
        if self.scan:
            graphdef, state = nnx.split(self.layers)
            x, ys = jax.lax.scan(lambda c, inp: body(graphdef, c, inp), x,
                                 (state, stacked(xs) if per_layer else xs), length=self.num_layers)
            return x, ([jax.tree.map(lambda a: a[i], ys) for i in range(self.num_layers)] if per_layer else ys)
        ys = []
        for i in range(self.num_layers):
            graphdef, state = nnx.split(getattr(self, f"layers_{i}"))
            x, y = body(graphdef, x, (state, xs[i] if per_layer else jax.tree.map(lambda a: a[i], xs)))
            ys.append(y)
        if per_layer:
            return x, ys
        return x, (None if xs is None and all(y is None for y in ys) else stacked(ys))

    def __call__(self, x, *, self_bias, self_mask, encoded=None, cross_mask=None, key=None, deterministic=True):
        """Embedded input x [B, L, D] -> normed output [B, L, D] (with the
        embedding dropout before and the final dropout after, as HF T5)."""
        k_layers, k_outer = _split(key, 2)
        emb_keep, final_keep = _residual_masks(k_outer, self.rate, deterministic, 2, x.shape)
        x = apply_keep(x, emb_keep, self.rate)
        layer_keys = None if k_layers is None else jax.random.split(k_layers, self.num_layers)

        def fn(layer, x, lk):
            return layer(x, self_bias=self_bias, self_mask=self_mask, encoded=encoded, cross_mask=cross_mask,
                         key=lk, deterministic=deterministic), None

        x, _ = self.run_layers(fn, x, layer_keys)
        x = self.final_norm(x)
        return apply_keep(x, final_keep, self.rate)


# --------------------------------------------------------------------------- shared pieces of the networks
def embedding_width(cfg: ModelConfig) -> int:
    """Width of the token/position embedding tables: embedding_size, or d_model when 0."""
    return int(cfg.embedding_size) or int(cfg.d_model)


class _Network(nnx.Module):
    def _init_embeddings(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.config = dataclasses.replace(cfg)
        dtype, pdtype = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
        self.dtype = dtype
        e = embedding_width(cfg)
        self.token_embedder = Embed(cfg.vocab_size, e, ("vocab", "embed"), 1.0, dtype=dtype,
                                    param_dtype=pdtype, rngs=rngs)
        if cfg.position_embedding == "learned":
            self.position_embedder = Embed(cfg.max_position_embeddings, e, ("abspos", "embed"), 1.0,
                                           dtype=dtype, param_dtype=pdtype, rngs=rngs)
        if cfg.type_vocab_size > 0:   # BERT's segment (token type) embedding, models/bert.py
            self.token_type_embedder = Embed(cfg.type_vocab_size, e, ("abspos", "embed"), 1.0, dtype=dtype,
                                             param_dtype=pdtype, rngs=rngs)
        if e != cfg.d_model:   # factorised embeddings (ALBERT, ELECTRA-Small): width e, projected to d_model
            self.embedding_projection = Dense((e,), (cfg.d_model,), ("embed_factor", "embed"), e ** -0.5,
                                              dtype=dtype, param_dtype=pdtype, rngs=rngs)

    def embed(self, tokens, positions=None, token_types=None):
        """tokens [B, L] -> [B, L, D]; absolute positions (learned/sinusoidal) use
        `positions` (restarting per packed example) or 0..L-1; token_types [B, L] (segment
        A/B) are added when the model has type embeddings.  Factorised embeddings
        (embedding_size != d_model) are summed at their width, then projected to D."""
        x = self.embed_tokens(tokens, positions, token_types)
        if hasattr(self, "embedding_projection"):
            x = constrain(self.embedding_projection(x), ("batch", "length", "act_embed"))
        return x

    def embed_tokens(self, tokens, positions=None, token_types=None):
        """The token (+ position) (+ token type) embedding sum at the embedding width [B, L, embedding_size or D]."""
        cfg = self.config
        x = self.token_embedder(tokens)
        if hasattr(self, "token_type_embedder"):   # no token_types given: all segment A (0)
            x = x + self.token_type_embedder(jnp.zeros_like(tokens) if token_types is None else token_types)
        if cfg.position_embedding == "learned" and tokens.shape[1] > cfg.max_position_embeddings:
            raise UserError(f"sequence length {tokens.shape[1]} exceeds model.max_position_embeddings="
                            f"{cfg.max_position_embeddings} (learned absolute positions)")
        if cfg.position_embedding != "relative":
            if positions is None:
                positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
            if cfg.position_embedding == "learned":
                x = x + self.position_embedder(positions)
            else:
                x = x + sinusoidal_positions(positions, x.shape[-1]).astype(x.dtype)
        return constrain(x, ("batch", "length", "act_embed"))

    def logits(self, y, stack: Stack):
        """Normed hidden states [.., D] -> float32 logits [.., V].  Tied
        embeddings scale by d_model**-0.5 first (T5.1.0 / HF tie_word_embeddings)."""
        if self.config.tie_embeddings:
            out = self.token_embedder.attend(y * (self.config.d_model ** -0.5))
        else:
            out = stack.logits_dense(y)
        if out.ndim == 3:
            out = constrain(out, ("batch", "length", "act_vocab"))
        return out.astype(jnp.float32)


def _relpos(stack: Stack, lq: int, lk: int, bidirectional: bool):
    if not hasattr(stack, "relpos_bias"):
        return None
    return stack.relpos_bias(jnp.arange(lq), jnp.arange(lk), bidirectional=bidirectional)


# --------------------------------------------------------------------------- encoder-decoder
class EncoderDecoder(_Network):
    """T5.  shared_encoder_decoder=True builds only the `decoder` stack; the
    encoder pass runs through the same layers without cross-attention and
    reuses the decoder's relpos table (bidirectional buckets) and
    `decoder_norm` (Mesh-TF bi_v1_shared: encoder_name="decoder")."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self._init_embeddings(cfg, rngs)
        self.shared = bool(cfg.shared_encoder_decoder)
        if self.shared and cfg.num_encoder_layers != cfg.num_decoder_layers:
            raise ValueError("shared_encoder_decoder needs num_encoder_layers == num_decoder_layers")
        if not self.shared:
            self.encoder = Stack(cfg, kind="encoder", num_layers=cfg.num_encoder_layers, cross_attention=False,
                                 logits=False, bidirectional=True, rngs=rngs)
        self.decoder = Stack(cfg, kind="decoder", num_layers=cfg.num_decoder_layers, cross_attention=True,
                             logits=not cfg.tie_embeddings, bidirectional=False, rngs=rngs)

    @property
    def encoder_stack(self) -> Stack:
        return self.decoder if self.shared else self.encoder

    def encode(self, tokens, segment_ids=None, positions=None, *, key=None, deterministic=True):
        """encoder_input_tokens [B, Lin] -> (encoded [B, Lin, D], encoder segments [B, Lin])."""
        seg = padding_or_segments(tokens, segment_ids)
        mask = attention_mask(seg, seg, key_valid=seg != 0)
        stack = self.encoder_stack
        bias = _relpos(stack, tokens.shape[1], tokens.shape[1], True)
        x = stack(self.embed(tokens, positions), self_bias=bias, self_mask=mask, key=key,
                  deterministic=deterministic)
        return x, seg

    def decode_train(self, encoded, enc_seg, tokens, segment_ids=None, positions=None, *, packed_encoder=False,
                     key=None, deterministic=True):
        """Teacher-forced decoder: decoder_input_tokens [B, Lt] -> logits [B, Lt, V]."""
        b, lt = tokens.shape
        seg = jnp.ones((b, lt), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
        self_mask = attention_mask(seg, seg, causal=True)
        if segment_ids is not None and packed_encoder:
            cross_mask = attention_mask(seg, enc_seg, key_valid=enc_seg != 0)
        else:
            cross_mask = jnp.broadcast_to((enc_seg != 0)[:, None, None, :], (b, 1, lt, enc_seg.shape[1]))
        bias = _relpos(self.decoder, lt, lt, False)
        y = self.decoder(self.embed(tokens, positions), self_bias=bias, self_mask=self_mask, encoded=encoded,
                         cross_mask=cross_mask, key=key, deterministic=deterministic)
        return self.logits(y, self.decoder)

    def __call__(self, batch, *, deterministic=True, dropout_rng=None):
        k_enc, k_dec = _split(dropout_rng, 2)
        encoded, enc_seg = self.encode(batch["encoder_input_tokens"], batch.get("encoder_segment_ids"),
                                       batch.get("encoder_positions"), key=k_enc, deterministic=deterministic)
        return self.decode_train(encoded, enc_seg, batch["decoder_input_tokens"], batch.get("decoder_segment_ids"),
                                 batch.get("decoder_positions"),
                                 packed_encoder=batch.get("encoder_segment_ids") is not None,
                                 key=k_dec, deterministic=deterministic)


# --------------------------------------------------------------------------- decoder-only
class DecoderOnly(_Network):
    """GPT-style LM (decoder_mask="causal") or prefix LM (decoder_mask="prefix":
    fully visible attention where decoder_causal_attention == 1).  The prefix LM
    uses bidirectional relative-position buckets (as Mesh-TF's Unitransformer
    with input_full_attention); the causal LM uses unidirectional ones."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self._init_embeddings(cfg, rngs)
        self.prefix = cfg.decoder_mask == "prefix"
        self.decoder = Stack(cfg, kind="decoder", num_layers=cfg.num_decoder_layers, cross_attention=False,
                             logits=not cfg.tie_embeddings, bidirectional=self.prefix, rngs=rngs)

    def hidden(self, batch, *, deterministic=True, dropout_rng=None):
        """Normed final hidden states [B, L, D] (the output layer's input)."""
        tokens = batch["decoder_input_tokens"]
        b, l = tokens.shape
        seg = batch.get("decoder_segment_ids")
        seg = jnp.ones((b, l), jnp.int32) if seg is None else seg.astype(jnp.int32)
        dca = batch.get("decoder_causal_attention") if self.prefix else None
        mask = attention_mask(seg, seg, causal=True, bidirectional_q=dca, bidirectional_k=dca)
        bias = _relpos(self.decoder, l, l, self.prefix)
        return self.decoder(self.embed(tokens, batch.get("decoder_positions")), self_bias=bias, self_mask=mask,
                            key=dropout_rng, deterministic=deterministic)

    def __call__(self, batch, *, deterministic=True, dropout_rng=None):
        y = self.hidden(batch, deterministic=deterministic, dropout_rng=dropout_rng)
        return self.logits(y, self.decoder)


# --------------------------------------------------------------------------- encoder-only
class EncoderOnly(_Network):
    """BERT-style encoder: MLM logits over every position (untied
    `encoder/logits_dense` or the tied embedding), optional token type
    embeddings, and BERT's heads (models/bert.py): a pooler + NSP head
    (nsp_head) or, with num_classes > 0, a `classifier` (kernel (embed, classes)
    + bias) on a pooled vector per packed example: the mean of its final hidden
    states (classifier_pooling="mean", default) or its first position's through
    the pooler ("first", BERT's [CLS]).  A classifier has no MLM output."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self._init_embeddings(cfg, rngs)
        self.encoder = Stack(cfg, kind="encoder", num_layers=cfg.num_encoder_layers, cross_attention=False,
                             logits=not cfg.tie_embeddings and bert.has_mlm_output(cfg), bidirectional=True,
                             rngs=rngs)
        self.pooling = cfg.classifier_pooling
        bert.init_heads(self, cfg, rngs)

    def hidden(self, batch, *, deterministic=True, dropout_rng=None):
        tokens = batch["encoder_input_tokens"]
        seg = padding_or_segments(tokens, batch.get("encoder_segment_ids"))
        mask = attention_mask(seg, seg, key_valid=seg != 0)
        bias = _relpos(self.encoder, tokens.shape[1], tokens.shape[1], True)
        y = self.encoder(self.embed(tokens, batch.get("encoder_positions"), batch.get("encoder_token_type_ids")),
                         self_bias=bias, self_mask=mask, key=dropout_rng, deterministic=deterministic)
        return y, seg

    def __call__(self, batch, *, deterministic=True, dropout_rng=None):
        if not bert.has_mlm_output(self.config):
            raise ValueError("an encoder classifier (num_classes > 0) has no MLM output; use classify()")
        y, _ = self.hidden(batch, deterministic=deterministic, dropout_rng=dropout_rng)
        return self.logits(y, self.encoder)

    def classify(self, batch, *, deterministic=True, dropout_rng=None, per_position=False):
        """-> float32 class logits [B, num_classes] of each row's first example, or with
        per_position [B, L, num_classes] (every packed example's at its first position)."""
        if not hasattr(self, "classifier"):
            raise ValueError("this EncoderOnly model has no classification head (num_classes == 0)")
        y, seg = self.hidden(batch, deterministic=deterministic, dropout_rng=dropout_rng)
        out = bert.class_logits(self, y, seg)
        return out if per_position else out[:, 0]


def build_model(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    """EncoderDecoder | DecoderOnly | EncoderOnly for cfg.architecture (models.build_model adds Electra)."""
    cfg = cfg.validate()
    if cfg.architecture == "electra":
        raise ValueError("architecture 'electra' is built by t5x_lite.models.build_model (models/electra.py)")
    cls = {"encoder_decoder": EncoderDecoder, "decoder_only": DecoderOnly, "encoder_only": EncoderOnly}
    return cls[cfg.architecture](cfg, rngs)
