"""T5.1.1 pretraining at T5X's sizes:  --config configs/t5_1_1.py:SIZE  (small base large xl xxl).

The sizes are T5X's t5x/examples/t5/t5_1_1/*.gin; everything else T5.1.1 needs (gated GELU,
untied logits, no dropout, z-loss 1e-4, summed loss) is already the default.  The pretraining
settings are T5X's runs/pretrain.gin: span corruption with inputs 512 / targets 114, batch 128,
packing, Adafactor with "constant * rsqrt_decay" (0.01 for 10k steps, then 1/sqrt(step)).

The data is the shipped corpus; for C4 prepare it and set --config.data.task=c4_v220_span_corruption.
vocab_size is T5X's 32128: the builtin vocabulary (8100 ids) fits, and T5's own SentencePiece
model is --config.vocabulary=spm:PATH.
"""

import ml_collections

from t5x_lite.train.default_config import get_config as default_config

# size: (d_model, num_heads, d_ff, layers per stack); every size has 64-wide heads.
SIZES = {
    "small": (512, 6, 1024, 8),
    "base": (768, 12, 2048, 12),
    "large": (1024, 16, 2816, 24),
    "xl": (2048, 32, 5120, 24),
    "xxl": (4096, 64, 10240, 24),
}


def get_config(size: str = "small") -> ml_collections.ConfigDict:
    if size not in SIZES:
        raise ValueError(f"configs/t5_1_1.py:SIZE must be one of {'|'.join(SIZES)}, got {size!r}")
    d_model, num_heads, d_ff, layers = SIZES[size]
    c = default_config()
    c.model.update(dict(vocab_size=32128, d_model=d_model, num_heads=num_heads, d_kv=64, d_ff=d_ff,
                        num_encoder_layers=layers, num_decoder_layers=layers, dtype="bfloat16"))
    if size in ("large", "xl", "xxl"):
        c.model.remat_policy = "full"
        c.mesh.update(dict(data=1, fsdp=-1))  # params and optimizer state sharded over all devices

    # T5X runs/pretrain.gin
    c.data.feature_lengths = ml_collections.ConfigDict(dict(inputs=512, targets=114))
    c.data.batch_size = 128
    c.train.update(dict(num_steps=100_000, checkpoint_every=1000, log_every=100, eval_every=1000, eval_steps=20))
    c.optimizer.update(dict(schedule="rsqrt", learning_rate=1.0, warmup_steps=10_000))
    return c
