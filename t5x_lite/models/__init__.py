"""t5x_lite models (Flax NNX): T5 encoder-decoder, decoder-only LM / prefix LM,
encoder-only MLM/classifier.  Design notes in docs/models.md.

Public API
    ModelConfig, build_model(cfg, rngs)
    model_logits(model, batch, *, deterministic=True, dropout_rng=None) -> [B, L, V] float32
    classification_logits(model, batch, ...) -> [B, num_classes] float32 (encoder_only)
    targets_and_weights(cfg, batch) -> (targets [B, L] int32, weights [B, L] float32)
    init_decode_state(model, prompt, max_decode_length) / decode_step(model, state, tokens)
    count_params(cfg), flops_per_sequence / flops_per_step / flops_per_token, table2_configs(base)
    scan_params / unscan_params (convert between scan_layers layouts)

Parameter tree (nnx.state(model, nnx.Param).to_pure_dict()), logical axes in
brackets.  Kernels are DenseGeneral-style: attention query/key/value are 3-D
(D, H, K) and the attention output is (H, K, D), so `heads` shards on its own;
HF's 2-D [H*K, D] torch weights map by transpose + reshape.

    token_embedder/embedding                                 (V, D)  [vocab, embed]
    position_embedder/embedding      (position_embedding="learned" only)
                                                             (max_position_embeddings, D) [abspos, embed]
    encoder/                         (encoder_decoder unless shared; encoder_only)
        relpos_bias/embedding                                (buckets, H) [relpos_buckets, heads]
        layers_{i}/pre_attention_layer_norm/scale            (D,)    [embed]
        layers_{i}/attention/{query,key,value}/kernel        (D, H, K) [embed, heads, kv]
        layers_{i}/attention/out/kernel                      (H, K, D) [heads, kv, embed]
        layers_{i}/pre_mlp_layer_norm/scale                  (D,)
        layers_{i}/mlp/{wi_0,wi_1}/kernel (gated) or wi/kernel (one activation)
                                                             (D, F)  [embed, mlp]
        layers_{i}/mlp/wo/kernel                             (F, D)  [mlp, embed]
        encoder_norm/scale                                   (D,)
        logits_dense/kernel          (encoder_only, untied)  (D, V)  [embed, vocab]
    decoder/
        relpos_bias/embedding                                (buckets, H)
        layers_{i}/pre_self_attention_layer_norm/scale
        layers_{i}/self_attention/{query,key,value,out}/kernel
        layers_{i}/pre_cross_attention_layer_norm/scale      (encoder_decoder only)
        layers_{i}/encoder_decoder_attention/{query,key,value,out}/kernel  (encoder_decoder only)
        layers_{i}/pre_mlp_layer_norm/scale, layers_{i}/mlp/...
        decoder_norm/scale                                   (D,)
        logits_dense/kernel          (untied only)           (D, V)  [embed, vocab]
    token_type_embedder/embedding    (type_vocab_size > 0)   (T, D)  [abspos, embed]
    pooler/{kernel (D, D) [embed, mlp], bias (D,) [mlp]}          (encoder_only: nsp_head, or a "first" classifier)
    nsp_head/{kernel (D, 2) [mlp, classes], bias (2,) [classes]}  (encoder_only, nsp_head, num_classes == 0)
    classifier/{kernel (D, C) [embed, classes], bias (C,) [classes]}   (encoder_only, num_classes > 0; such a
                                     classifier has no encoder/logits_dense.  BERT's heads: models/bert.py)

With scan_layers=True each stack has `layers/...` instead of `layers_{i}/...`,
every leaf with a leading (N,) ["layers"] axis; scan_params / unscan_params
convert.  shared_encoder_decoder=True has no `encoder` subtree: the encoder pass
uses decoder/layers_{i} minus cross-attention, decoder/relpos_bias (with
bidirectional buckets) and decoder/decoder_norm.

HF T5 name mapping (for the converter): shared -> token_embedder;
{encoder,decoder}.block.{i}.layer.0.SelfAttention.{q,k,v,o} -> .../{attention|self_attention}/{query,key,value,out};
block.0.layer.0.SelfAttention.relative_attention_bias -> {stack}/relpos_bias/embedding (same (buckets, H) layout);
layer.0.layer_norm -> pre_(self_)attention_layer_norm; decoder layer.1.EncDecAttention -> encoder_decoder_attention,
layer.1.layer_norm -> pre_cross_attention_layer_norm; last layer's DenseReluDense.{wi,wi_0,wi_1,wo} -> mlp/...,
its layer_norm -> pre_mlp_layer_norm; {encoder,decoder}.final_layer_norm -> {encoder_norm,decoder_norm};
lm_head -> decoder/logits_dense/kernel (transposed).
"""

from __future__ import annotations

import jax.numpy as jnp

from t5x_lite.models.config import ModelConfig
from t5x_lite.models.decode import decode_step, init_decode_state
from t5x_lite.models.flops import (count_params, flops_per_sequence, flops_per_step, flops_per_token,
                                   table2_configs)
from t5x_lite.models.electra import Electra
from t5x_lite.models.networks import DecoderOnly, EncoderDecoder, EncoderOnly
from t5x_lite.models.networks import build_model as _build_network


def build_model(cfg: ModelConfig, rngs):
    """EncoderDecoder | DecoderOnly | EncoderOnly | Electra (generator + discriminator) for cfg.architecture."""
    cfg = cfg.validate()
    return Electra(cfg, rngs) if cfg.architecture == "electra" else _build_network(cfg, rngs)
from t5x_lite.models.scan_utils import scan_params, unscan_params


def model_logits(model, batch: dict, *, deterministic: bool = True, dropout_rng=None):
    """Teacher-forced logits [B, L, V] float32 for any architecture (encoder_only:
    MLM logits over encoder positions).  Dropout only when deterministic=False,
    with the explicit dropout_rng key (same key -> same mask)."""
    return model(batch, deterministic=deterministic, dropout_rng=dropout_rng)


def classification_logits(model, batch: dict, *, deterministic: bool = True, dropout_rng=None):
    """Class logits [B, num_classes] float32 of an EncoderOnly model with num_classes > 0."""
    if not isinstance(model, EncoderOnly):
        raise ValueError("classification_logits needs an encoder_only model")
    return model.classify(batch, deterministic=deterministic, dropout_rng=dropout_rng)


def targets_and_weights(cfg: ModelConfig, batch: dict):
    """What the loss is on: (targets [B, L] int32, weights [B, L] float32).
    Weights default to targets != 0 when the batch has no *_loss_weights."""
    prefix = "encoder" if cfg.architecture in ("encoder_only", "electra") else "decoder"
    targets = jnp.asarray(batch[f"{prefix}_target_tokens"], jnp.int32)
    weights = batch.get(f"{prefix}_loss_weights")
    weights = (targets != 0) if weights is None else jnp.asarray(weights)
    return targets, weights.astype(jnp.float32)


__all__ = [
    "ModelConfig", "build_model", "model_logits", "classification_logits", "targets_and_weights",
    "init_decode_state", "decode_step", "count_params", "flops_per_sequence", "flops_per_step",
    "flops_per_token", "table2_configs", "scan_params", "unscan_params",
    "EncoderDecoder", "DecoderOnly", "EncoderOnly", "Electra",
]
