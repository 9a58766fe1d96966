"""Hugging Face T5 <-> t5x_lite: the mapping of configs and weights (numpy only).

Supported: T5.1.0 (feed_forward_proj="relu", tied embeddings, decoder output
scaled by d_model**-0.5) and T5.1.1 / Flan-T5 style (gated-gelu, separate
lm_head, no scaling), plus the other HF activations t5x_lite has (gated-relu,
gated-silu, gelu_new, gelu, silu).

Name mapping (HF Linear weights are [out, in]; t5x_lite kernels are [in, ...]):
    shared                                         -> token_embedder/embedding          (V, D)
    {enc,dec}.block.0.layer.0.SelfAttention.relative_attention_bias
                                                   -> {stack}/relpos_bias/embedding     (buckets, H)
    block.i.layer.0.SelfAttention.{q,k,v}  [H*K, D] -> layers_i/{attention|self_attention}/{query,key,value}
                                                      /kernel (D, H, K)   (transpose + reshape)
    block.i.layer.0.SelfAttention.o        [D, H*K] -> .../out/kernel (H, K, D)
    decoder block.i.layer.1.EncDecAttention.*      -> layers_i/encoder_decoder_attention/*
    layer_norm weights                              -> pre_*_layer_norm/scale
    DenseReluDense.{wi | wi_0, wi_1, wo}           -> layers_i/mlp/{wi | wi_0, wi_1, wo}/kernel (transposed)
    {enc,dec}.final_layer_norm                     -> {encoder_norm, decoder_norm}/scale
    lm_head                                        -> decoder/logits_dense/kernel (D, V)
HF's scale_decoder_outputs (transformers 5) / tie_word_embeddings (transformers 4)
decides the d_model**-0.5 logit scaling, which t5x_lite ties to tie_embeddings:
scaled + no separate lm_head -> tie_embeddings=True; unscaled -> untied
logits_dense (= shared^T when the file has no lm_head); scaled + a separate
lm_head -> untied logits_dense = lm_head^T * d_model**-0.5 (same logits).
"""

from __future__ import annotations

import numpy as np

from t5x_lite.errors import UserError


# HF activation name (T5Config.dense_act_fn) <-> t5x_lite ACTIVATIONS name.
_HF_TO_ACT = {"relu": "relu", "gelu_new": "gelu", "gelu": "gelu_exact", "silu": "silu", "swish": "silu"}
_ACT_TO_HF = {"relu": "relu", "gelu": "gelu_new", "gelu_exact": "gelu", "silu": "silu"}
# Keys that old HF checkpoints carry but no T5 uses (the decoder's cross-attention has no position bias).
_IGNORED_HF_KEYS = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
# Keys that, when present, must equal shared.weight (HF ties them).
_TIED_INPUT_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


# ----------------------------------------------------------------------------- configs
def _mlp_activations(hf: dict) -> tuple[str, ...]:
    proj = str(hf.get("feed_forward_proj", "relu"))
    parts = proj.split("-")
    gated = len(parts) == 2 and parts[0] == "gated"
    if len(parts) > 2 or (len(parts) == 2 and not gated):
        raise UserError(f"unsupported feed_forward_proj {proj!r} in config.json (expected e.g. 'relu' or 'gated-gelu')")
    act = parts[-1]
    if proj == "gated-gelu":  # HF's backwards-compatible special case: gated-gelu uses the tanh GELU
        act = "gelu_new"
    if act not in _HF_TO_ACT:
        raise UserError(f"unsupported activation {act!r} (feed_forward_proj {proj!r}); "
                        f"supported: {', '.join(sorted(_HF_TO_ACT))}")
    return (_HF_TO_ACT[act], "linear") if gated else (_HF_TO_ACT[act],)


def _hf_scales_logits(hf: dict) -> bool:
    """Whether HF multiplies the decoder output by d_model**-0.5 before lm_head."""
    if "scale_decoder_outputs" in hf:          # transformers >= 5 writes this
        return bool(hf["scale_decoder_outputs"])
    return hf.get("tie_word_embeddings", True) is not False   # transformers 4 semantics


def hf_config_to_model_config(hf: dict):
    """ModelConfig of an HF T5 config.json dict (raises UserError if it is not a T5 we support)."""
    from t5x_lite.models import ModelConfig   # lazy: keeps `t5x-lite convert --help` fast (no JAX)
    if hf.get("model_type") not in ("t5", "mt5"):   # mT5 is the T5.1.1 architecture under another name
        raise UserError(f"config.json has model_type {hf.get('model_type')!r}; only 't5' (and 'mt5') checkpoints "
                        "can be converted")
    if not hf.get("is_encoder_decoder", True):
        raise UserError("config.json is not an encoder-decoder T5 (is_encoder_decoder=false)")
    for key in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
        if not isinstance(hf.get(key), int) or hf[key] <= 0:
            raise UserError(f"config.json: {key} must be a positive integer, got {hf.get(key)!r}")
    num_dec = hf.get("num_decoder_layers") or hf["num_layers"]
    return ModelConfig(
        architecture="encoder_decoder",
        vocab_size=hf["vocab_size"], d_model=hf["d_model"], num_heads=hf["num_heads"], d_kv=hf["d_kv"],
        d_ff=hf["d_ff"], num_encoder_layers=hf["num_layers"], num_decoder_layers=int(num_dec),
        mlp_activations=_mlp_activations(hf),
        tie_embeddings=_hf_scales_logits(hf),   # may be switched off below if the file has its own lm_head
        dropout_rate=0.0,                       # fine-tuning sets its own; HF's default 0.1 is a training knob
        layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
        position_embedding="relative",
        relative_attention_num_buckets=int(hf.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(hf.get("relative_attention_max_distance", 128)),
    )


def model_config_to_hf(cfg) -> dict:
    """config.json for T5ForConditionalGeneration (transformers 4 and 5 read it alike)."""
    if cfg.architecture != "encoder_decoder":
        raise UserError(f"t5x-to-hf converts encoder_decoder models (T5ForConditionalGeneration); "
                        f"this checkpoint is {cfg.architecture}")
    if cfg.shared_encoder_decoder:
        raise UserError("t5x-to-hf: shared_encoder_decoder models have no Hugging Face T5 equivalent")
    if cfg.position_embedding != "relative":
        raise UserError(f"t5x-to-hf: HF T5 needs relative position embeddings, model has {cfg.position_embedding!r}")
    acts = tuple(cfg.mlp_activations)
    if len(acts) == 1 and acts[0] in _ACT_TO_HF:
        proj = _ACT_TO_HF[acts[0]]
    elif len(acts) == 2 and acts[1] == "linear" and acts[0] in ("gelu", "relu", "silu"):
        proj = "gated-" + acts[0]       # HF maps "gated-gelu" to the tanh GELU, as t5x_lite's "gelu"
    else:
        raise UserError(f"t5x-to-hf: mlp_activations {list(acts)} have no Hugging Face T5 equivalent")
    parts = proj.split("-")
    dense_act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": int(cfg.vocab_size), "d_model": int(cfg.d_model), "d_kv": int(cfg.d_kv),
        "d_ff": int(cfg.d_ff), "num_layers": int(cfg.num_encoder_layers),
        "num_decoder_layers": int(cfg.num_decoder_layers), "num_heads": int(cfg.num_heads),
        "relative_attention_num_buckets": int(cfg.relative_attention_num_buckets),
        "relative_attention_max_distance": int(cfg.relative_attention_max_distance),
        "dropout_rate": float(cfg.dropout_rate), "layer_norm_epsilon": float(cfg.layer_norm_epsilon),
        "initializer_factor": 1.0, "feed_forward_proj": proj, "dense_act_fn": dense_act,
        "is_gated_act": len(parts) == 2, "is_encoder_decoder": True, "use_cache": True,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
        # transformers 4 reads tie_word_embeddings, 5 reads scale_decoder_outputs (and unties a saved lm_head).
        "tie_word_embeddings": bool(cfg.tie_embeddings), "scale_decoder_outputs": bool(cfg.tie_embeddings),
        "dtype": str(cfg.param_dtype),
    }


GENERATION_CONFIG = {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0, "_from_model_config": True}


# ----------------------------------------------------------------------------- param trees
def _stack_layout(stack: str, n: int, gated: bool):
    """(hf_suffix, t5x path tuple, kind) for every weight of one layer stack."""
    attn = "attention" if stack == "encoder" else "self_attention"
    pre_attn = "pre_attention_layer_norm" if stack == "encoder" else "pre_self_attention_layer_norm"
    mlp_layer = 1 if stack == "encoder" else 2
    wis = ("wi_0", "wi_1") if gated else ("wi",)
    out = [(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            (stack, "relpos_bias", "embedding"), "copy"),
           (f"{stack}.final_layer_norm.weight", (stack, f"{stack}_norm", "scale"), "copy")]
    for i in range(n):
        b, L = f"{stack}.block.{i}.layer", f"layers_{i}"
        out.append((f"{b}.0.layer_norm.weight", (stack, L, pre_attn, "scale"), "copy"))
        for hf_name, name in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")):
            out.append((f"{b}.0.SelfAttention.{hf_name}.weight", (stack, L, attn, name, "kernel"),
                        "attn_out" if name == "out" else "attn_in"))
        if stack == "decoder":
            out.append((f"{b}.1.layer_norm.weight", (stack, L, "pre_cross_attention_layer_norm", "scale"), "copy"))
            for hf_name, name in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")):
                out.append((f"{b}.1.EncDecAttention.{hf_name}.weight",
                            (stack, L, "encoder_decoder_attention", name, "kernel"),
                            "attn_out" if name == "out" else "attn_in"))
        out.append((f"{b}.{mlp_layer}.layer_norm.weight", (stack, L, "pre_mlp_layer_norm", "scale"), "copy"))
        for w in wis + ("wo",):
            out.append((f"{b}.{mlp_layer}.DenseReluDense.{w}.weight", (stack, L, "mlp", w, "kernel"), "transpose"))
    return out


def _layout(cfg):
    gated = len(cfg.mlp_activations) > 1
    return (_stack_layout("encoder", cfg.num_encoder_layers, gated)
            + _stack_layout("decoder", cfg.num_decoder_layers, gated))


def _hf_shape(kind: str, t5x_shape: tuple) -> tuple:
    if kind == "copy":
        return tuple(t5x_shape)
    if kind == "attn_in":      # (D, H, K) <- [H*K, D]
        d, h, k = t5x_shape
        return (h * k, d)
    if kind == "attn_out":     # (H, K, D) <- [D, H*K]
        h, k, d = t5x_shape
        return (d, h * k)
    return tuple(reversed(t5x_shape))


def _to_t5x(kind: str, w: np.ndarray, t5x_shape: tuple) -> np.ndarray:
    if kind == "copy":
        return np.ascontiguousarray(w)
    return np.ascontiguousarray(w.T.reshape(t5x_shape))


def _to_hf(kind: str, w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    if kind == "copy":
        return np.ascontiguousarray(w)
    if kind == "attn_in":
        return np.ascontiguousarray(w.reshape(w.shape[0], -1).T)
    if kind == "attn_out":
        return np.ascontiguousarray(w.reshape(-1, w.shape[-1]).T)
    return np.ascontiguousarray(w.T)


def _unflatten(flat: dict) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return tree


def hf_to_t5x_params(tensors: dict, hf_config: dict):
    """(params pure dict, ModelConfig) from HF T5 tensors {name: np.ndarray} and its config.json dict."""
    cfg = hf_config_to_model_config(hf_config)
    tensors = dict(tensors)
    for key in _IGNORED_HF_KEYS:
        tensors.pop(key, None)
    shared = tensors.pop("shared.weight", None)
    for key in _TIED_INPUT_KEYS:
        w = tensors.pop(key, None)
        if w is None:
            continue
        if shared is None:
            shared = w
        elif w.shape != shared.shape or not np.array_equal(w, shared):
            raise UserError(f"{key} differs from shared.weight: separate encoder/decoder input embeddings "
                            "are not supported (t5x_lite has one token embedding)")
    if shared is None:
        raise UserError("model.safetensors has no shared.weight (the token embedding)")
    lm_head = tensors.pop("lm_head.weight", None)
    if lm_head is not None and lm_head.shape == shared.shape and np.array_equal(lm_head, shared):
        lm_head = None   # a tied copy
    scaled = cfg.tie_embeddings
    if lm_head is not None or not scaled:
        cfg.tie_embeddings = False
    cfg.validate()

    # lazy: keeps `t5x-lite convert --help` fast (no JAX)
    from t5x_lite.loading import abstract_params, flatten_params, some_names
    expected = flatten_params(abstract_params(cfg))
    flat: dict = {}

    def put(path, w):
        want = expected.get(path)
        if want is None:
            raise RuntimeError(f"converter bug: {'/'.join(path)} is not in the t5x_lite param tree")
        flat[path] = w.astype(want.dtype) if w.dtype != want.dtype else w

    V, D = cfg.vocab_size, cfg.d_model
    if shared.shape != (V, D):
        raise UserError(f"config.json does not match model.safetensors: shared.weight has shape "
                        f"{list(shared.shape)}, config says vocab_size={V}, d_model={D}")
    put(("token_embedder", "embedding"), np.ascontiguousarray(shared))
    if not cfg.tie_embeddings:
        head = shared if lm_head is None else lm_head
        if head.shape != (V, D):
            raise UserError(f"config.json does not match model.safetensors: lm_head.weight has shape "
                            f"{list(head.shape)}, expected {[V, D]}")
        kernel = head.T * np.asarray(D ** -0.5, head.dtype) if (scaled and lm_head is not None) else head.T
        put(("decoder", "logits_dense", "kernel"), np.ascontiguousarray(kernel))

    layout = _layout(cfg)
    missing = [name for name, _, _ in layout if name not in tensors]
    if missing:
        raise UserError(f"model.safetensors lacks {len(missing)} T5 weights the config implies: {some_names(missing)}")
    unknown = set(tensors) - {name for name, _, _ in layout}
    if unknown:
        raise UserError(f"model.safetensors has weights that are not part of this T5 config: {some_names(unknown)}")
    for name, path, kind in layout:
        want = expected.get(path)
        if want is None:
            raise RuntimeError(f"converter bug: {'/'.join(path)} is not in the t5x_lite param tree")
        w = tensors[name]
        if tuple(w.shape) != _hf_shape(kind, want.shape):
            raise UserError(f"config.json does not match model.safetensors: {name} has shape {list(w.shape)}, "
                            f"expected {list(_hf_shape(kind, want.shape))}")
        put(path, _to_t5x(kind, w, tuple(want.shape)))
    left = set(expected) - set(flat)
    if left:
        raise RuntimeError(f"converter bug: no HF weight for {some_names('/'.join(p) for p in left)}")
    return _unflatten(flat), cfg


def t5x_to_hf_tensors(params: dict, cfg) -> dict:
    """HF T5ForConditionalGeneration tensors {name: np.ndarray} of a t5x_lite encoder-decoder param tree."""
    from t5x_lite.loading import flatten_params, some_names   # lazy: keeps `t5x-lite convert --help` fast
    model_config_to_hf(cfg)   # raises for models HF cannot represent
    if cfg.scan_layers:
        from t5x_lite.models import unscan_params   # lazy: keeps `t5x-lite convert --help` fast (no JAX)
        params = unscan_params(params)
    flat = flatten_params(params)
    out = {"shared.weight": np.ascontiguousarray(np.asarray(flat.pop(("token_embedder", "embedding"))))}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = _to_hf("transpose", flat.pop(("decoder", "logits_dense", "kernel")))
    for name, path, kind in _layout(cfg):
        if path not in flat:
            raise UserError(f"checkpoint params lack {'/'.join(path)} (not a t5x_lite encoder-decoder of this config?)")
        out[name] = _to_hf(kind, flat.pop(path))
    if flat:
        raise UserError(f"checkpoint has params with no HF T5 equivalent: {some_names('/'.join(p) for p in flat)}")
    return out
