"""Parameter and FLOP counts per architecture (for MFU and the paper's Table 2).

Notation: D d_model, H heads, K d_kv, F d_ff, A = number of MLP input kernels
(1 for ReLU, 2 for gated-GELU), V vocab, N layers of a stack, Lin / Lt input /
target lengths, T = Lin + Lt.

Parameters (exactly the leaves of nnx.state(model, nnx.Param); tests check this):
    attention block    4 D H K            (query, key, value, out)
    MLP                (A + 1) D F
    norm               D per layer norm
    encoder layer      attn + MLP + 2 D
    decoder layer      2 attn + MLP + 3 D (with cross-attention), attn + MLP + 2 D (decoder-only)
    per stack          N layers + D (final norm) + buckets*H (relative positions)
    BERT heads         type_vocab_size E token types, pooler D D + D, NSP head 2 D + 2, classifier C D + C;
                       an encoder classifier has no untied logits (models/bert.py)
    embeddings         V D (+ max_position_embeddings D when learned) (+ D V untied logits); with
                       embedding_size E != D (factorised): V E (+ max_position_embeddings E) + E D
    electra            electra_param_counts / electra_flops_per_sequence below (generator + discriminator)

Forward FLOPs of one sequence (a multiply-add = 2 FLOPs):
    projections        2 x (matmul params touched) per token
    attention          QK^T and AV: 2 x 2 H K per (query, visible key) pair.  Like
                       MaxText (PR #1988) we count only the *visible* pairs:
                       bidirectional Lq*Lk, causal T^2/2, prefix LM Lin^2 + (T^2 - Lin^2)/2.
    cross-attention    q/out projections per target token, key/value projections
                       per input token (per decoder layer), Lt*Lin pairs
    logits             2 D V per position whose logits are computed (targets for
                       enc-dec; all T positions for decoder-only; all for MLM)
Training FLOPs = 3 x forward (the backward pass costs twice the forward).

Table 2 (Raffel et al. 2020, Sec. 3.2.2): P = params of one L-layer stack, M =
FLOPs of an L+L encoder-decoder on (inputs, targets), which equals (roughly)
an L-layer decoder-only model on the concatenation inputs+targets: each token
passes through L layers either way.  Hence enc-dec = 2P & M, shared = P & M,
L/2 + L/2 layers = P & M/2, LM = P & M, prefix LM = P & M.  The paper calls the
enc-dec "2P" although cross-attention adds ~1/4 of a decoder layer's attention
+ MLP weights; see tests/test_models_counts.py for the tolerances.
"""

from __future__ import annotations

import dataclasses

from t5x_lite.models import bert
from t5x_lite.models.config import ModelConfig
from t5x_lite.models.electra import generator_config
from t5x_lite.models.networks import embedding_width


def _attn(cfg: ModelConfig) -> int:
    return 4 * cfg.d_model * cfg.num_heads * cfg.d_kv


def _mlp(cfg: ModelConfig) -> int:
    return (len(cfg.mlp_activations) + 1) * cfg.d_model * cfg.d_ff


def _layer_params(cfg: ModelConfig, kind: str) -> int:
    d = cfg.d_model
    if kind == "cross":
        return 2 * _attn(cfg) + _mlp(cfg) + 3 * d
    return _attn(cfg) + _mlp(cfg) + 2 * d


def _stack_params(cfg: ModelConfig, n: int, kind: str) -> int:
    rel = cfg.relative_attention_num_buckets * cfg.num_heads if cfg.position_embedding == "relative" else 0
    return n * _layer_params(cfg, kind) + cfg.d_model + rel


def count_params(cfg: ModelConfig) -> int:
    """Total number of parameters of build_model(cfg)."""
    if cfg.architecture == "electra":
        return electra_param_counts(cfg)["total"]
    d, v = cfg.d_model, cfg.vocab_size
    e = int(cfg.embedding_size) or d          # factorised embeddings: (V, e) tables + an (e, D) projection
    total = v * e + (e * d if e != d else 0)
    if cfg.position_embedding == "learned":
        total += cfg.max_position_embeddings * e
    if not cfg.tie_embeddings and bert.has_mlm_output(cfg):   # an encoder classifier has no MLM output
        total += d * v
    total += cfg.type_vocab_size * e                            # token type (segment) embeddings
    if cfg.architecture == "encoder_decoder":
        total += _stack_params(cfg, cfg.num_decoder_layers, "cross")
        if not cfg.shared_encoder_decoder:
            total += _stack_params(cfg, cfg.num_encoder_layers, "self")
    elif cfg.architecture == "decoder_only":
        total += _stack_params(cfg, cfg.num_decoder_layers, "self")
    else:
        total += _stack_params(cfg, cfg.num_encoder_layers, "self")
        total += bert.head_params(cfg)   # BERT: pooler, NSP head / classifier
    return int(total)


def flops_per_sequence(cfg: ModelConfig, input_length: int, target_length: int, *,
                       causal_halving: bool = True) -> dict[str, float]:
    """Forward FLOPs of one (unpacked) example, split by kind, plus "forward" and
    "train" (= 3 x forward) totals.  decoder_only models see the concatenation
    of input_length + target_length tokens (pure LM: input_length=0, the
    causal mask throughout); encoder_only models see input_length tokens.
    causal_halving=False counts every (query, key) pair, i.e. what the dense
    kernels actually execute (XLA's cost analysis agrees with that number)."""
    if cfg.architecture == "electra":
        return electra_flops_per_sequence(cfg, input_length)   # both encoders + heads
    half = 0.5 if causal_halving else 1.0
    d, h, k, v = cfg.d_model, cfg.num_heads, cfg.d_kv, cfg.vocab_size
    proj = 2 * (_attn(cfg) + _mlp(cfg))          # per token per layer
    pair = 4 * h * k                              # per visible (query, key) pair per layer
    lin, lt = int(input_length), int(target_length)
    f = {"projections": 0.0, "attention": 0.0, "cross_attention": 0.0, "logits": 0.0}
    if cfg.architecture == "encoder_decoder":
        ne, nd = cfg.num_encoder_layers, cfg.num_decoder_layers
        f["projections"] = ne * lin * proj + nd * lt * proj
        f["attention"] = ne * pair * lin * lin + nd * pair * lt * lt * half
        f["cross_attention"] = nd * (2 * 2 * d * h * k * lt + 2 * 2 * d * h * k * lin + pair * lt * lin)
        f["logits"] = 2 * d * v * lt
    elif cfg.architecture == "decoder_only":
        n, t = cfg.num_decoder_layers, lin + lt
        f["projections"] = n * t * proj
        if cfg.decoder_mask == "prefix":
            f["attention"] = n * pair * (lin * lin + (t * t - lin * lin) * half)
        else:
            f["attention"] = n * pair * t * t * half
        f["logits"] = 2 * d * v * t
    else:
        n = cfg.num_encoder_layers
        f["projections"] = n * lin * proj
        f["attention"] = n * pair * lin * lin
        f["logits"] = 2 * d * v * lin if bert.has_mlm_output(cfg) else bert.head_flops(cfg, lin)
        e = int(cfg.embedding_size) or d
        if e != d:
            f["projections"] += 2 * e * d * lin   # the factorised embedding's projection
    f = {key: float(val) for key, val in f.items()}
    f["forward"] = sum(f.values())
    f["train"] = 3.0 * f["forward"]
    return f


def flops_per_step(cfg: ModelConfig, batch_size: int, input_length: int, target_length: int) -> float:
    """Training FLOPs of one step over `batch_size` sequences (for MFU)."""
    return float(batch_size) * flops_per_sequence(cfg, input_length, target_length)["train"]


def flops_per_token(cfg: ModelConfig, input_length: int, target_length: int) -> float:
    """Training FLOPs per token, tokens counted as input_length + target_length
    (encoder_only: input_length)."""
    tokens = input_length if cfg.architecture in ("encoder_only", "electra") else input_length + target_length
    return flops_per_sequence(cfg, input_length, target_length)["train"] / max(tokens, 1)


def table2_configs(base: ModelConfig) -> dict[str, ModelConfig]:
    """The five architectures of Table 2 from one encoder-decoder config with
    L = base.num_decoder_layers layers per stack:
        encoder_decoder   L + L layers                      2P, M
        enc_dec_shared    L layers shared by both stacks     P, M
        enc_dec_6_layers  L/2 + L/2 layers                   P, M/2
        language_model    decoder-only, L layers, causal     P, M (on inputs+targets)
        prefix_lm         decoder-only, L layers, prefix     P, M"""
    n = int(base.num_decoder_layers)
    ed = dataclasses.replace(base, architecture="encoder_decoder", num_encoder_layers=n, num_decoder_layers=n,
                             shared_encoder_decoder=False)
    return {
        "encoder_decoder": ed,
        "enc_dec_shared": dataclasses.replace(ed, shared_encoder_decoder=True),
        "enc_dec_6_layers": dataclasses.replace(ed, num_encoder_layers=max(n // 2, 1),
                                                num_decoder_layers=max(n // 2, 1)),
        "language_model": dataclasses.replace(ed, architecture="decoder_only", decoder_mask="causal"),
        "prefix_lm": dataclasses.replace(ed, architecture="decoder_only", decoder_mask="prefix"),
    }


# --------------------------------------------------------------------------- electra (models/electra.py)
def electra_param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of Electra(cfg): "discriminator" (shared embeddings included: what an
    encoder_only fine-tune loads, plus the RTD head), "generator" (its own params: projection,
    stack, MLM head) and "total"."""
    d, e, v = int(cfg.d_model), embedding_width(cfg), int(cfg.vocab_size)
    g = generator_config(cfg)
    emb = (v + int(cfg.type_vocab_size)) * e + (cfg.max_position_embeddings * e
                                                if cfg.position_embedding == "learned" else 0)
    disc = emb + (e * d if e != d else 0) + _stack_params(cfg, cfg.num_encoder_layers, "self") + d * d + d + 1
    gen = ((e * g.d_model if e != g.d_model else 0) + _stack_params(g, cfg.num_encoder_layers, "self")
           + g.d_model * e + e + v)
    return {"discriminator": int(disc), "generator": int(gen), "total": int(disc + gen)}


def electra_flops_per_sequence(cfg: ModelConfig, length: int) -> dict[str, float]:
    """Forward FLOPs of one sequence of `length` tokens: both encoders (as flops.py counts an
    encoder_only model), the projections, the generator's tied logits at every position and the
    RTD head.  Sampling and the losses are not counted."""
    g, d, e, v, n = generator_config(cfg), int(cfg.d_model), embedding_width(cfg), int(cfg.vocab_size), int(length)
    f = {}
    for name, c in (("discriminator", cfg), ("generator", g)):
        part = flops_per_sequence(dataclasses.replace(c, architecture="encoder_only", vocab_size=1, embedding_size=0),
                             n, 0)
        f[name] = part["projections"] + part["attention"]
    f["embedding_projections"] = 2.0 * n * ((e * d if e != d else 0) + (e * g.d_model if e != g.d_model else 0))
    f["heads"] = 2.0 * n * (g.d_model * e + e * v + d * d + d)
    f = {key: float(val) for key, val in f.items()}
    f["forward"] = sum(f.values())
    f["train"] = 3.0 * f["forward"]
    return f
