"""Fine-tune on local_summarize_debian (package description -> synopsis; ROUGE-2-F, the CNN/DM stand-in).

    t5x-lite train --config configs/finetune_local_summarize_debian.py --config.init_checkpoint=CKPT --workdir DIR
"""

from t5x_lite.evaluation.finetune import finetune_config


def get_config():
    return finetune_config("local_summarize_debian", inputs_length=128, targets_length=32)
