"""Fine-tune on local_translate_en_de (gettext UI strings; SacreBLEU, the paper's EnDe stand-in).

    t5x-lite train --config configs/finetune_local_translate_en_de.py \
        --config.init_checkpoint=PRETRAINED_CKPT --workdir /tmp/ft_ende
    t5x-lite eval --checkpoint /tmp/ft_ende/checkpoints --task local_translate_en_de --output /tmp/ft_ende/eval
"""

from t5x_lite.evaluation.finetune import finetune_config


def get_config():
    return finetune_config("local_translate_en_de", inputs_length=64, targets_length=64)
