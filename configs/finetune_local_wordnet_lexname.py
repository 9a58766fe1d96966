"""Fine-tune on local_wordnet_lexname (WordNet gloss -> lexicographer file, 45 classes; accuracy).

    t5x-lite train --config configs/finetune_local_wordnet_lexname.py --config.init_checkpoint=CKPT --workdir DIR
"""

from t5x_lite.evaluation.finetune import finetune_config


def get_config():
    return finetune_config("local_wordnet_lexname", inputs_length=64, targets_length=16)
