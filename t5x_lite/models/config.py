"""ModelConfig: every architecture knob in one flat, typed dataclass.

What each field means, and its default, is written once: in the model section of
t5x_lite/train/default_config.py (the experiment config of record).  The defaults
below are the same values, so ModelConfig() is the embedded tiny default model;
tests/test_config_defaults.py keeps the two equal.  The resolved fields are stored
beside the params in every checkpoint (as a dict), so a checkpoint always says how
to rebuild its model.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from t5x_lite.errors import UserError
from t5x_lite.models.attention import ATTENTION_IMPLS
from t5x_lite.models.layers import ACTIVATIONS, DTYPES

# The allowed values of the choice fields (validators elsewhere take them from here).
ARCHITECTURES = ("encoder_decoder", "decoder_only", "encoder_only", "electra")
POSITION_EMBEDDINGS = ("relative", "learned", "sinusoidal")
DECODER_MASKS = ("causal", "prefix")
REMAT_POLICIES = ("none", "full", "dots_saveable")
CLASSIFIER_POOLINGS = ("mean", "first")


@dataclasses.dataclass
class ModelConfig:
    architecture: str = "encoder_decoder"
    vocab_size: int = 0
    d_model: int = 128
    embedding_size: int = 0
    num_heads: int = 4
    d_kv: int = 32
    d_ff: int = 256
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    mlp_activations: tuple[str, ...] = ("gelu", "linear")
    tie_embeddings: bool = False
    dropout_rate: float = 0.0
    layer_norm_epsilon: float = 1e-6
    position_embedding: str = "relative"
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    max_position_embeddings: int = 2048
    shared_encoder_decoder: bool = False
    decoder_mask: str = "causal"
    num_classes: int = 0
    classifier_pooling: str = "mean"
    type_vocab_size: int = 0
    nsp_head: bool = False
    electra_generator_size: float = 0.25
    electra_rtd_weight: float = 50.0
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat_policy: str = "none"
    scan_layers: bool = False
    # auto: cudnn (jax.nn.dot_product_attention, cuDNN) on a GPU backend with a bfloat16/float16 compute
    # dtype, else einsum (the HF-parity path, the CPU default); xla / cudnn force
    # jax.nn.dot_product_attention with that implementation.  A call with attention dropout active
    # (dropout_rate > 0, training) always runs einsum (attention.resolve_attention_impl).
    attention_impl: str = "auto"

    def __post_init__(self):
        self.mlp_activations = tuple(self.mlp_activations)

    def validate(self) -> "ModelConfig":
        for name, choices in (("architecture", ARCHITECTURES), ("position_embedding", POSITION_EMBEDDINGS),
                              ("decoder_mask", DECODER_MASKS), ("remat_policy", REMAT_POLICIES),
                              ("classifier_pooling", CLASSIFIER_POOLINGS), ("dtype", tuple(DTYPES)),
                              ("param_dtype", tuple(DTYPES)), ("attention_impl", ATTENTION_IMPLS)):
            if getattr(self, name) not in choices:
                raise UserError(f"model.{name} must be one of {'|'.join(choices)}, got {getattr(self, name)!r}")
        for name in ("vocab_size", "d_model", "num_heads", "d_kv", "d_ff"):
            if int(getattr(self, name)) <= 0:
                raise UserError(f"model.{name} must be positive, got {getattr(self, name)!r}")
        if self.architecture == "encoder_decoder" and self.shared_encoder_decoder and \
                int(self.num_encoder_layers) != int(self.num_decoder_layers):
            raise UserError("model.shared_encoder_decoder needs num_encoder_layers == num_decoder_layers")
        bad = [a for a in self.mlp_activations if a not in ACTIVATIONS]
        if bad or not self.mlp_activations:
            raise UserError(f"model.mlp_activations must be a non-empty list of {sorted(ACTIVATIONS)}, "
                            f"got {list(self.mlp_activations)}")
        if self.position_embedding == "relative" and (int(self.relative_attention_num_buckets) < 4
                                                       or int(self.relative_attention_max_distance) < 2):
            raise UserError("model.relative_attention_num_buckets must be >= 4 and max_distance >= 2")
        if int(self.embedding_size) < 0:
            raise UserError(f"model.embedding_size must be >= 0 (0 = d_model), got {self.embedding_size!r}")
        if int(self.embedding_size) not in (0, int(self.d_model)):   # factorised embeddings
            if self.architecture not in ("encoder_only", "electra"):
                raise UserError(f"model.embedding_size={self.embedding_size} (!= d_model) is for encoder_only "
                                f"and electra models, not {self.architecture}; use 0 (= d_model)")
            if self.tie_embeddings and self.architecture == "encoder_only":
                raise UserError("model.tie_embeddings needs embedding_size 0 (= d_model): factorised embeddings "
                                f"({self.embedding_size} -> {self.d_model}) have no tied output projection")
        if not 0.0 <= float(self.dropout_rate) < 1.0:
            raise UserError(f"model.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        if self.attention_impl == "cudnn" and self.dtype == "float32":
            raise UserError("model.attention_impl='cudnn' needs dtype bfloat16 (cuDNN attention has no float32); "
                            "use auto, einsum or xla")
        return self

    def __hash__(self):
        # Networks keep a copy of their config as a static (graphdef) attribute, which must be hashable.
        return hash(tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in self.to_dict().items())))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mlp_activations"] = list(self.mlp_activations)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            hints = [f"{u} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(u, known, 1)) else u
                     for u in unknown]
            raise UserError(f"unknown model config keys: {', '.join(hints)}")
        return cls(**dict(d)).validate()
