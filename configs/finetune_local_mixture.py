"""Multi-task fine-tuning on the local mixture (translation en-de, lexname classification,
summarization), evaluated on each task separately (best checkpoint per task metric, as the paper).

    t5x-lite train --config configs/finetune_local_mixture.py --config.init_checkpoint=CKPT --workdir DIR
"""

from t5x_lite.evaluation.finetune import finetune_config

TASKS = ["local_translate_en_de", "local_wordnet_lexname", "local_summarize_debian"]


def get_config():
    from t5x_lite.data import Mixture, MixtureRegistry
    name = "local_finetune_mixture"
    if name not in MixtureRegistry.names():
        # Equal rates: examples-proportional mixing would let the big summarization set dominate.
        MixtureRegistry.add(Mixture(name, [(t, 1.0) for t in TASKS]))
    return finetune_config(name, inputs_length=128, targets_length=64, eval_tasks=TASKS)
