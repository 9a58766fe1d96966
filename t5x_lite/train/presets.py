"""Experiment presets behind configs/*.py (and, translated, gin/**.gin).

Sizes follow T5X's gin files (t5x/examples/t5/t5_1_1/*.gin, t5_1_0/base.gin);
pretraining settings follow T5X's pretrain.gin: span corruption with inputs 512
/ targets 114, batch 128, packing, Adafactor with "constant * rsqrt_decay"
(0.01 for 10k steps, then 1/sqrt(step)), z-loss 1e-4, summed loss.

The data defaults to the shipped corpus (builtin_* tasks), which needs no
download; for C4 prepare it locally and pass --config.data.task=c4_v220_span_corruption.
The presets keep T5X's vocab_size 32128 (the real T5 SentencePiece model is
not shipped; vocabulary "builtin" has 8100 ids and fits, or point
--config.vocabulary=spm:PATH at cc_all.32000.100extra's .model).
"""

from __future__ import annotations

import ml_collections

from t5x_lite.train.default_config import base_config

# name: (d_model, num_heads, d_kv, d_ff, layers per stack)
T5_1_1_SIZES = {
    "small": (512, 6, 64, 1024, 8),
    "base": (768, 12, 64, 2048, 12),
    "large": (1024, 16, 64, 2816, 24),
    "xl": (2048, 32, 64, 5120, 24),
    "xxl": (4096, 64, 64, 10240, 24),
}


def pretrain() -> ml_collections.ConfigDict:
    c = base_config()
    c.model.vocab_size = 32128
    c.model.dtype = "bfloat16"
    c.data.task = "builtin_span_corruption"
    c.data.feature_lengths = ml_collections.ConfigDict(dict(inputs=512, targets=114))
    c.data.batch_size = 128
    c.train.update(dict(num_steps=100_000, checkpoint_every=1000, log_every=100, eval_every=1000, eval_steps=20))
    c.optimizer.update(dict(name="adafactor", schedule="rsqrt", learning_rate=1.0, warmup_steps=10_000))
    return c


def t5_1_1(size: str) -> ml_collections.ConfigDict:
    """T5.1.1: gated-GELU, untied logits, no dropout in pre-training, bf16 compute."""
    if size not in T5_1_1_SIZES:
        raise ValueError(f"T5.1.1 size must be one of {list(T5_1_1_SIZES)}, got {size!r}")
    d, h, k, f, n = T5_1_1_SIZES[size]
    c = pretrain()
    c.model.update(dict(d_model=d, num_heads=h, d_kv=k, d_ff=f, num_encoder_layers=n, num_decoder_layers=n,
                        mlp_activations=("gelu", "linear"), tie_embeddings=False, dropout_rate=0.0))
    if size in ("large", "xl", "xxl"):
        # Shard params and optimizer state over all devices (FSDP) instead of replicating.
        c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
        c.model.remat_policy = "full"
    return c


def t5_1_0_base() -> ml_collections.ConfigDict:
    """The original T5 (paper baseline): ReLU MLP, tied embeddings, dropout 0.1."""
    c = pretrain()
    c.model.update(dict(d_model=768, num_heads=12, d_kv=64, d_ff=3072, num_encoder_layers=12,
                        num_decoder_layers=12, mlp_activations=("relu",), tie_embeddings=True, dropout_rate=0.1))
    return c


def decoder_only_lm() -> ml_collections.ConfigDict:
    """GPT-style causal LM (base width, 12 layers) on the targets-only LM task."""
    c = t5_1_1("base")
    c.model.update(dict(architecture="decoder_only", decoder_mask="causal"))
    c.data.task = "builtin_lm"
    c.data.feature_lengths = ml_collections.ConfigDict(dict(targets=512))
    return c


def prefix_lm() -> ml_collections.ConfigDict:
    """Decoder-only prefix LM: the inputs prefix is fully visible, loss on the targets."""
    c = t5_1_1("base")
    c.model.update(dict(architecture="decoder_only", decoder_mask="prefix"))
    c.data.task = "builtin_prefix_lm"
    c.data.feature_lengths = ml_collections.ConfigDict(dict(inputs=512, targets=512))
    return c


TABLE2 = ("encoder_decoder", "enc_dec_shared", "enc_dec_6_layers", "language_model", "prefix_lm")


def table2(arch: str) -> ml_collections.ConfigDict:
    """T5 paper Table 2 at base size: the baseline T5.1.0-base model reshaped by
    t5x_lite.models.table2_configs, all trained with the baseline i.i.d. denoising objective
    (decoder-only models read inputs ++ targets)."""
    if arch not in TABLE2:
        raise ValueError(f"Table 2 architecture must be one of {TABLE2}, got {arch!r}")
    from t5x_lite.models import table2_configs
    from t5x_lite.models.config import ModelConfig

    c = t5_1_0_base()
    base = ModelConfig.from_dict(dict(c.model.to_dict(), mlp_activations=list(c.model.mlp_activations)))
    chosen = table2_configs(base)[arch].to_dict()
    chosen["mlp_activations"] = tuple(chosen["mlp_activations"])
    c.model.update(chosen)
    c.data.task = "builtin_iid_denoising"
    c.train.num_steps = 2 ** 18  # the paper's pre-training length for the comparisons
    return c


def _default():
    from t5x_lite.train.default_config import get_config
    return get_config()


# gin file (under gin/) -> (configs/ file[:arg], builder).  The gin files are generated from
# these builders (python -m t5x_lite.train.presets) and tests check they stay equal.
GIN_PRESETS = {
    "default": ("default.py", _default),
    **{f"t5_1_1/{s}": (f"t5_1_1_{s}.py", (lambda s=s: t5_1_1(s))) for s in T5_1_1_SIZES},
    "t5_1_0/base": ("t5_1_0_base.py", t5_1_0_base),
    "decoder_only/lm": ("decoder_only_lm.py", decoder_only_lm),
    "decoder_only/prefix_lm": ("prefix_lm.py", prefix_lm),
    **{f"table2/{a}": (f"table2.py:{a}", (lambda a=a: table2(a))) for a in TABLE2},
}


def write_gin_files(root: str = "gin") -> list[str]:
    import os

    from t5x_lite.train.config import config_to_gin
    written = []
    for name, (py, build) in GIN_PRESETS.items():
        path = os.path.join(root, name + ".gin")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        header = (f"# Same experiment as configs/{py} (generated by `python -m t5x_lite.train.presets`).\n"
                  f"# t5x-lite train --gin_file {path} --workdir DIR [--gin_bindings 'train.num_steps = 100']\n")
        with open(path, "w") as f:
            f.write(header + config_to_gin(build()))
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_gin_files():
        print(p)
