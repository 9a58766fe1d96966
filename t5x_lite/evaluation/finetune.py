"""Fine-tuning configs (configs/finetune_*.py are thin wrappers around `finetune_config`).

T5 paper fine-tuning (Sec. 3.1.2, A.1 of docs): start from the pre-trained params
(`--config.init_checkpoint=DIR`, params only, fresh optimizer state), constant
learning rate 0.001 with Adafactor, dropout 0.1, greedy decoding, and keep the
checkpoint with the best validation score per task (the trainer's best/<metric>/).

The model section is the tiny default's (t5x_lite/train/default_config.py) so that
`t5x-lite train` (the default pretraining) -> `configs/finetune_*.py` works as is; a
checkpoint of another size needs the matching --config.model.* overrides.

Learning rate: the paper's 0.001 is kept (Adafactor with parameter scaling makes the
update size relative to each parameter's RMS, so the same constant suits tiny models);
fine-tuning the tiny model for only a few hundred steps is the one place it is scaled
up, via --config.optimizer.learning_rate (tools/e2e_finetune.sh uses 0.003, see
docs/evaluation.md).

Decoder-only / prefix-LM models are fine-tuned on "<inputs> target: <targets>" (the
paper's format): `lm_format=True` switches to the task variant "<task>_lm_format"
registered by t5x_lite.evaluation.evaluator.lm_format_task.
"""

from __future__ import annotations

import ml_collections


def finetune_config(task: str, *, inputs_length: int, targets_length: int, eval_tasks=None,
                    lm_format: bool = False, architecture: str = "encoder_decoder",
                    num_steps: int = 2000) -> ml_collections.ConfigDict:
    from t5x_lite.train.default_config import get_config as default_config

    c = default_config()
    c.model.architecture = architecture
    if architecture == "decoder_only":
        c.model.decoder_mask = "prefix"
        c.model.num_decoder_layers = c.model.num_encoder_layers + c.model.num_decoder_layers
    c.model.dropout_rate = 0.1                    # paper: dropout 0.1 when fine-tuning
    eval_tasks = list(eval_tasks or [task])
    if lm_format:
        from t5x_lite.evaluation.evaluator import lm_format_task
        task = lm_format_task(task)
        eval_tasks = [lm_format_task(t) for t in eval_tasks]
    c.data.task = task
    c.data.feature_lengths = ml_collections.ConfigDict(dict(inputs=inputs_length, targets=targets_length))
    c.data.batch_size = 32
    c.data.pack = True
    c.train.update(dict(num_steps=num_steps, checkpoint_every=500, log_every=50, eval_every=500, eval_steps=4,
                        keep_checkpoints=2))
    c.optimizer.update(dict(name="adafactor", schedule="constant", learning_rate=0.001, warmup_steps=0))
    c.init_checkpoint = ""                       # set with --config.init_checkpoint=DIR
    c.evaluation.update(dict(tasks=eval_tasks, split="validation", num_examples=128, batch_size=32,
                             decode="greedy", max_decode_length=targets_length))
    return c
