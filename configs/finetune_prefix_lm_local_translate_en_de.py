"""Prefix-LM (decoder-only, fully visible prefix) fine-tuning on local_translate_en_de in the T5 paper's
format: "translate English to German: That is good. target: Das ist gut." (task local_translate_en_de_lm_format).

The model section must match the pre-trained decoder-only checkpoint (here: the tiny default's sizes with
num_decoder_layers = encoder + decoder layers, decoder_mask="prefix"); override --config.model.* otherwise.

    t5x-lite train --config configs/finetune_prefix_lm_local_translate_en_de.py --config.init_checkpoint=CKPT --workdir DIR
    t5x-lite eval --checkpoint DIR/checkpoints --task local_translate_en_de_lm_format --output DIR/eval
"""

from t5x_lite.evaluation.finetune import finetune_config


def get_config():
    return finetune_config("local_translate_en_de", inputs_length=64, targets_length=64, lm_format=True,
                           architecture="decoder_only")
