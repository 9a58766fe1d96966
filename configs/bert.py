"""BERT (Devlin et al. 2019) and encoder classification fine-tuning:  --config configs/bert.py:NAME

Pretraining (MLM + next-sentence prediction on builtin_bert; docs/models.md, encoder section):
    bert_base       BERT-base's shape: 12 layers, d_model 768, 12 heads of 64, d_ff 3072 with a plain
                    (non-gated) exact GELU, learned positions up to 512, 2 token types, the MLM output
                    tied to the embedding, vocab_size 30522 (BERT's WordPiece size; the builtin
                    vocabulary's 8100 ids fit): 109.4M params, the paper's "110M".  BERT's recipe:
                    batch 256, AdamW 1e-4 (weight decay 0.01, warm-up 10k steps, then linear decay to 0
                    at 1M steps), dropout 0.1, grad-norm clipping 1.0, loss = mean MLM + mean NSP.
                    Blocks are this codebase's pre-norm T5 blocks (RMS norm, no biases), not BERT's
                    post-LayerNorm ones.  Sequences of 128 tokens (BERT's first 90% of steps).
    tiny            2 layers of d_model 128 on the builtin vocabulary; 300 steps in a few minutes on 2 CPUs.
    bert_base_mlm_only, tiny_mlm_only
                    the same without the NSP head: the same pairs, MLM loss only (RoBERTa's "segment
                    pair" input without NSP).

Fine-tuning a classifier on any classification task (label words as targets: local_wordnet_lexname,
local_debian_section, builtin_wordnet_pos, GLUE/SuperGLUE names):
    finetune_TASK   e.g. finetune_local_wordnet_lexname.  Sets only what a classifier changes on top of
                    the init_checkpoint's model section: architecture encoder_only (so an ELECTRA
                    checkpoint's discriminator loads too), num_classes = the task's label count,
                    classifier_pooling "first" (BERT's [CLS] + pooler), dropout 0.1.  AdamW 1e-4 with
                    10% warm-up and linear decay, batch 32, 1000 steps, the task's metrics every 250
                    steps (best checkpoints kept per metric).  Without init_checkpoint it trains the
                    default-shaped encoder from scratch: the no-pretraining baseline.

    t5x-lite train --config configs/bert.py:tiny --workdir /tmp/bert_tiny
    t5x-lite train --config configs/bert.py:finetune_local_wordnet_lexname \\
        --config.init_checkpoint=/tmp/bert_tiny --workdir /tmp/bert_tiny_lexname
    t5x-lite eval --checkpoint /tmp/bert_tiny_lexname --task local_wordnet_lexname --output /tmp/bert_eval
"""

import ml_collections

import t5x_lite.tasks  # noqa: F401  (registers the tasks named below)
from t5x_lite.data import classification, get_task_or_mixture
from t5x_lite.train.default_config import get_config as default_config

BERT_MODEL = dict(architecture="encoder_only", position_embedding="learned", type_vocab_size=2, nsp_head=True,
                  mlp_activations=("gelu_exact",), tie_embeddings=True, classifier_pooling="first")
SIZES = {  # name: (d_model, num_heads, d_ff, layers, vocab_size, max_position_embeddings)
    "bert_base": (768, 12, 3072, 12, 30522, 512),
    "tiny": (128, 2, 512, 2, 0, 128),
}
FINETUNE, MLM_ONLY = "finetune_", "_mlm_only"


def pretrain(size: str, nsp: bool) -> ml_collections.ConfigDict:
    d_model, heads, d_ff, layers, vocab_size, max_pos = SIZES[size]
    c = default_config()
    c.model.update(dict(BERT_MODEL, nsp_head=nsp, d_model=d_model, num_heads=heads, d_kv=d_model // heads,
                        d_ff=d_ff, num_encoder_layers=layers, num_decoder_layers=layers, vocab_size=vocab_size,
                        max_position_embeddings=max_pos))
    c.data.task = "builtin_bert"
    c.data.feature_lengths = ml_collections.ConfigDict(dict(inputs=128))
    c.train.update(dict(z_loss=0.0, loss_normalization="mean", grad_clip=1.0))
    c.optimizer.update(dict(name="adamw", schedule="linear", weight_decay=0.01, epsilon=1e-6))
    if size == "bert_base":
        c.model.update(dict(dropout_rate=0.1, layer_norm_epsilon=1e-12, dtype="bfloat16"))
        c.data.batch_size = 256
        c.train.update(dict(num_steps=1_000_000, checkpoint_every=10_000, eval_every=10_000, log_every=100))
        c.optimizer.update(dict(learning_rate=1e-4, warmup_steps=10_000))
    else:
        c.data.batch_size = 32
        c.train.update(dict(num_steps=300, checkpoint_every=100, eval_every=100, log_every=20))
        c.optimizer.update(dict(learning_rate=1e-3, warmup_steps=30))
    return c


def finetune(task: str) -> ml_collections.ConfigDict:
    labels = classification.require_labels(get_task_or_mixture(task))
    c = default_config()
    c.model.update(dict(architecture="encoder_only", num_classes=len(labels), classifier_pooling="first",
                        dropout_rate=0.1))
    c.data.task = task
    c.data.feature_lengths = ml_collections.ConfigDict(dict(inputs=128 if task == "local_debian_section" else 64))
    c.data.batch_size = 32
    c.train.update(dict(num_steps=1000, checkpoint_every=250, eval_every=250, log_every=50, keep_checkpoints=2,
                        z_loss=0.0, loss_normalization="mean", grad_clip=1.0))
    c.optimizer.update(dict(name="adamw", schedule="linear", learning_rate=1e-4, warmup_steps=100,
                            weight_decay=0.01, epsilon=1e-6))
    c.evaluation.update(dict(tasks=(task,), num_examples=512, batch_size=64))
    return c


def get_config(name: str = "tiny") -> ml_collections.ConfigDict:
    if name.startswith(FINETUNE):
        return finetune(name[len(FINETUNE):])
    size = name[: -len(MLM_ONLY)] if name.endswith(MLM_ONLY) else name
    if size not in SIZES:
        raise ValueError(f"configs/bert.py:NAME must be one of bert_base|tiny|bert_base_mlm_only|tiny_mlm_only|"
                         f"finetune_TASK, got {name!r}")
    return pretrain(size, nsp=not name.endswith(MLM_ONLY))
