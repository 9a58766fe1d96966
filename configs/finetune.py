"""T5 paper fine-tuning:  --config configs/finetune.py:TASK --config.init_checkpoint=CKPT

Starts from a pre-trained checkpoint (a checkpoint directory or a training workdir): its params
(with a fresh optimizer), its model section and its vocabulary; only dropout, set to the paper's
0.1, is changed.  Then a constant learning rate of 0.001 with Adafactor, greedy decoding, and the
checkpoint with the best validation score kept per task metric (the trainer's best/<metric>/).
Fine-tuning a tiny model for a few hundred steps is where the rate is raised, with
--config.optimizer.learning_rate (tools/e2e_finetune.sh uses 0.003, see docs/evaluation.md).

TASK is one of TASKS below.  The decoder-only prefix LM fine-tunes on the paper's
"<inputs> target: <targets>" format (the "<task>_lm_format" tasks).

Wall time of the full preset (2000 steps of batch 32, 4 decode evals of 128 examples) on this
project's 2-core machine (/proc/cpuinfo: "AMD EPYC", family 25 model 17, 2.6 GHz), from the
tiny default pretrained model (2.89M params), extrapolated from a 40-step run of each preset
(steady step time x 2000 + 4 evals; compile and checkpoints add under a minute).  Measured while
other jobs shared the two cores (load average 4-7), so read them as upper bounds:
    local_translate_en_de             2.6 s/step  -> ~87 min
    local_wordnet_lexname             0.92 s/step -> ~31 min
    local_summarize_debian            2.1 s/step  -> ~71 min
    local_mixture                     3.2 s/step  -> ~108 min (3 evaluators)
    prefix_lm_local_translate_en_de   2.8-4.1 s/step -> ~2 h (decoder-only over 128 positions;
                                      timed from scratch: an encoder-decoder checkpoint does not fit it)
Use --config.train.num_steps to scale: tools/e2e_finetune.sh runs 300 steps per task.

    t5x-lite train --config configs/finetune.py:local_translate_en_de \\
        --config.init_checkpoint=PRETRAINED_WORKDIR --workdir /tmp/ft_ende
    t5x-lite eval --checkpoint /tmp/ft_ende --task local_translate_en_de --output /tmp/ft_ende/eval
"""

import ml_collections

import t5x_lite.tasks  # noqa: F401  (registers the tasks named below)
from t5x_lite.data import Mixture, MixtureRegistry
from t5x_lite.evaluation.evaluator import lm_format_task
from t5x_lite.train.default_config import get_config as default_config

LOCAL = ["local_translate_en_de", "local_wordnet_lexname", "local_summarize_debian"]
MIXTURE = "local_finetune_mixture"

# TASK: (train task, evaluated tasks, inputs length, targets length)
TASKS = {
    "local_translate_en_de": ("local_translate_en_de", None, 64, 64),        # SacreBLEU (the EnDe stand-in)
    "local_wordnet_lexname": ("local_wordnet_lexname", None, 64, 16),        # accuracy, 45 classes
    "local_summarize_debian": ("local_summarize_debian", None, 128, 32),     # ROUGE (the CNN/DM stand-in)
    "local_mixture": (MIXTURE, LOCAL, 128, 64),                              # the three, each evaluated
    "prefix_lm_local_translate_en_de": (lm_format_task("local_translate_en_de"), None, 64, 64),
}


def get_config(task="local_translate_en_de"):
    if task not in TASKS:
        raise ValueError(f"configs/finetune.py:TASK must be one of {'|'.join(TASKS)}, got {task!r}")
    train_task, eval_tasks, inputs_length, targets_length = TASKS[task]
    if train_task == MIXTURE and MIXTURE not in MixtureRegistry.names():
        # Equal rates: examples-proportional mixing would let the big summarization set dominate.
        MixtureRegistry.add(Mixture(MIXTURE, [(t, 1.0) for t in LOCAL]))
    c = default_config()
    c.model.dropout_rate = 0.1
    if task.startswith("prefix_lm_"):
        c.model.update(dict(architecture="decoder_only", decoder_mask="prefix"))
    c.data.task = train_task
    c.data.feature_lengths = ml_collections.ConfigDict(dict(inputs=inputs_length, targets=targets_length))
    c.data.batch_size = 32
    c.train.update(dict(num_steps=2000, checkpoint_every=500, log_every=50, eval_every=500, keep_checkpoints=2))
    c.optimizer.learning_rate = 0.001
    c.evaluation.update(dict(tasks=tuple(eval_tasks or [train_task]), num_examples=128, batch_size=32,
                             max_decode_length=targets_length))
    return c
