"""ModelConfig: every architecture knob in one flat dataclass.

The same fields appear as `config.model` in the ml_collections experiment
configs and are stored beside the params in every checkpoint (as a dict), so a
checkpoint always says how to rebuild its model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from t5x_lite.errors import UserError

ARCHITECTURES = ("encoder_decoder", "decoder_only", "encoder_only")


@dataclasses.dataclass
class ModelConfig:
    # "encoder_decoder" (T5), "decoder_only" (GPT-style LM / prefix LM) or
    # "encoder_only" (BERT-style MLM + classification head).
    architecture: str = "encoder_decoder"
    vocab_size: int = 32128
    d_model: int = 512
    num_heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    num_encoder_layers: int = 8
    num_decoder_layers: int = 8
    # ("relu",) is T5.1.0; ("gelu", "linear") is T5.1.1's gated-GELU.
    mlp_activations: tuple[str, ...] = ("gelu", "linear")
    # T5.1.0 ties input and output embeddings and scales logits by d_model**-0.5.
    tie_embeddings: bool = False
    dropout_rate: float = 0.0
    layer_norm_epsilon: float = 1e-6
    # "relative" (T5 buckets), "learned" (GPT/BERT) or "sinusoidal".
    position_embedding: str = "relative"
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    max_position_embeddings: int = 2048  # only for learned/sinusoidal
    # encoder_decoder only: one set of layer params for both stacks (Table 2, "Enc-dec, shared").
    shared_encoder_decoder: bool = False
    # decoder_only only: "causal" (LM) or "prefix" (prefix LM; inputs fully visible).
    decoder_mask: str = "causal"
    # encoder_only only: size of the classification head (0 = none).
    num_classes: int = 0
    # encoder_only classification head pooling: "mean" over the first example's tokens, or "first" token.
    classifier_pooling: str = "mean"
    dtype: str = "float32"        # compute dtype: float32 or bfloat16
    param_dtype: str = "float32"
    remat_policy: str = "none"    # none | full | dots_saveable (see models/ docs)
    scan_layers: bool = False

    def __post_init__(self):
        self.mlp_activations = tuple(self.mlp_activations)

    def validate(self) -> "ModelConfig":
        if self.architecture not in ARCHITECTURES:
            raise UserError(f"model.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        for name in ("vocab_size", "d_model", "num_heads", "d_kv", "d_ff"):
            if int(getattr(self, name)) <= 0:
                raise UserError(f"model.{name} must be positive, got {getattr(self, name)!r}")
        if self.position_embedding not in ("relative", "learned", "sinusoidal"):
            raise UserError(f"model.position_embedding must be relative|learned|sinusoidal, got {self.position_embedding!r}")
        if self.decoder_mask not in ("causal", "prefix"):
            raise UserError(f"model.decoder_mask must be causal|prefix, got {self.decoder_mask!r}")
        if self.dtype not in ("float32", "bfloat16") or self.param_dtype not in ("float32", "bfloat16"):
            raise UserError(f"model.dtype/param_dtype must be float32 or bfloat16, got {self.dtype!r}/{self.param_dtype!r}")
        if self.remat_policy not in ("none", "full", "dots_saveable"):
            raise UserError(f"model.remat_policy must be none|full|dots_saveable, got {self.remat_policy!r}")
        if self.classifier_pooling not in ("mean", "first"):
            raise UserError(f"model.classifier_pooling must be mean|first, got {self.classifier_pooling!r}")
        if self.architecture == "encoder_decoder" and self.shared_encoder_decoder and \
                int(self.num_encoder_layers) != int(self.num_decoder_layers):
            raise UserError("model.shared_encoder_decoder needs num_encoder_layers == num_decoder_layers")
        from t5x_lite.models.layers import ACTIVATIONS
        bad = [a for a in self.mlp_activations if a not in ACTIVATIONS]
        if bad or not self.mlp_activations:
            raise UserError(f"model.mlp_activations must be a non-empty list of {sorted(ACTIVATIONS)}, got {list(self.mlp_activations)}")
        if self.position_embedding == "relative" and (int(self.relative_attention_num_buckets) < 4
                                                       or int(self.relative_attention_max_distance) < 2):
            raise UserError("model.relative_attention_num_buckets must be >= 4 and max_distance >= 2")
        if not 0.0 <= float(self.dropout_rate) < 1.0:
            raise UserError(f"model.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            import difflib
            hints = [f"{u} (did you mean {difflib.get_close_matches(u, known, 1)[0]}?)"
                     if difflib.get_close_matches(u, known, 1) else u for u in unknown]
            raise UserError(f"unknown model config keys: {', '.join(hints)}")
        return cls(**dict(d)).validate()
