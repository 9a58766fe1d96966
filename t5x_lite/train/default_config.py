"""The embedded default experiment: a tiny T5.1.1 on builtin_span_corruption.

`t5x-lite train --workdir DIR` with no --config trains exactly this (configs/default.py
re-exports it).  It is sized to show a visibly falling loss within a few hundred
steps / a few minutes on a 2-core CPU; every preset in configs/ has the same keys
(see docs/training.md for what each means).
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """All keys every experiment config carries, with T5X-like pretraining defaults."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Every ModelConfig field (t5x_lite/models/config.py), at its defaults.  vocab_size 0 =
    # take the vocabulary's size rounded up to a multiple of 128.
    from t5x_lite.models.config import ModelConfig
    model = ModelConfig().to_dict()
    model["mlp_activations"] = tuple(model["mlp_activations"])
    model["vocab_size"] = 0
    c.model = ml_collections.ConfigDict(model)
    c.vocabulary = "builtin"
    c.data = ml_collections.ConfigDict(dict(
        task="builtin_span_corruption",
        feature_lengths=ml_collections.ConfigDict(dict(inputs=512, targets=114)),
        batch_size=128,          # global, over all hosts
        pack=True,
        shuffle=True,
        shuffle_seed=-1,         # -1: use `seed`
        eval_split="validation",
    ))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=10_000,
        checkpoint_every=1000,   # 0: only at the end
        keep_checkpoints=3,
        log_every=100,
        eval_every=1000,         # 0: no eval
        eval_steps=20,
        num_microbatches=1,
        z_loss=1e-4,
        label_smoothing=0.0,
        loss_normalization="sum",  # T5X default (loss_normalizing_factor=None); "mean" per target token
        grad_clip=0.0,           # global-norm clip; 0 = off (Adafactor clips updates itself)
        async_checkpointing=True,
    ))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adafactor",
        learning_rate=1.0,       # rsqrt: 1.0 / sqrt(max(step, 10k)) = 0.01 then 1/sqrt(step)
        schedule="rsqrt",
        warmup_steps=10_000,
        end_learning_rate=0.0,
        weight_decay=0.0,
        decay_rate=0.8,
        clipping_threshold=1.0,
        multiply_by_parameter_scale=True,
        b1=0.9,
        b2=0.999,
    ))
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.init_checkpoint = ""       # params-only restore for fine-tuning ("" = from scratch)
    c.evaluation = ml_collections.ConfigDict(dict(
        tasks=[],                # decode-based evaluators run every train.eval_every steps
        split="validation",
        num_examples=64,
        batch_size=16,
        decode="greedy",         # greedy | beam | sample
        beam_size=4,
        max_decode_length=64,
    ))
    return c


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.model.update(dict(d_model=128, num_heads=4, d_kv=32, d_ff=256,
                        num_encoder_layers=2, num_decoder_layers=2))
    c.data.feature_lengths = ml_collections.ConfigDict(dict(inputs=128, targets=32))
    c.data.batch_size = 16
    c.train.update(dict(num_steps=300, checkpoint_every=100, log_every=10, eval_every=100, eval_steps=4))
    c.optimizer.update(dict(name="adafactor", schedule="constant", learning_rate=0.01, warmup_steps=0))
    return c
