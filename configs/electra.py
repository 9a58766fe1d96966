"""ELECTRA pretraining (Clark et al. 2020):  --config configs/electra.py:SIZE  (small tiny).

small   the paper's ELECTRA-Small (Table 6 and the ELECTRA code's defaults): 12 layers, hidden 256,
        4 heads of 64, FFN 1024, embedding size 128 (factorised: projected to 256), 512 learned
        positions, vocab 30522 (BERT's uncased WordPiece size), generator 1/4 of the width (64
        hidden, 1 head, FFN 256, 12 layers), RTD weight 50, 15% masking, sequences of 128, batch
        128, Adam (lr 5e-4, eps 1e-6, weight decay 0.01, 10k warm-up steps, linear decay) for 1M
        steps, dropout 0.1.  Discriminator 13.5M parameters (the paper's "14M"; see docs/models.md).
        The blocks are this codebase's T5-style ones (pre-norm RMS norm, no biases, exact GELU MLP)
        rather than BERT's post-LayerNorm blocks; BERT's WordPiece vocabulary is not shipped: the
        builtin vocabulary (8100 ids) fits in the 30522 rows, --config.vocabulary=spm:PATH sets another.
tiny    a 2-layer ELECTRA on builtin_mlm that shows both losses falling in a few minutes on 2 CPU
        cores (docs/models.md, "ELECTRA", has a real run).

Both train on an MLM task (the bert_mlm preprocessor: builtin_mlm); the objective is
t5x_lite/train/electra_objective.py and the networks t5x_lite/models/electra.py.
"""

import ml_collections

from t5x_lite.train.default_config import get_config as default_config

SIZES = ("small", "tiny")


def _electra(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c.model.update(dict(architecture="electra", position_embedding="learned", mlp_activations=("gelu_exact",),
                        electra_generator_size=0.25, electra_rtd_weight=50.0))
    c.data.task = "builtin_mlm"
    c.train.loss_normalization = "mean"   # the step applies exactly the paper's loss gradient
    c.train.z_loss = 0.0                  # the paper has none
    c.optimizer.update(dict(name="adamw", schedule="linear", b1=0.9, b2=0.999, epsilon=1e-6, weight_decay=0.01,
                            end_learning_rate=0.0))
    return c


def get_config(size: str = "small") -> ml_collections.ConfigDict:
    if size not in SIZES:
        raise ValueError(f"configs/electra.py:SIZE must be one of {'|'.join(SIZES)}, got {size!r}")
    c = _electra(default_config())
    if size == "small":
        c.model.update(dict(vocab_size=30522, d_model=256, embedding_size=128, num_heads=4, d_kv=64, d_ff=1024,
                            num_encoder_layers=12, num_decoder_layers=12, max_position_embeddings=512,
                            dropout_rate=0.1))
        c.data.feature_lengths = ml_collections.ConfigDict(dict(inputs=128))
        c.data.batch_size = 128
        c.train.update(dict(num_steps=1_000_000, checkpoint_every=10_000, log_every=100, eval_every=10_000,
                            eval_steps=20))
        c.optimizer.update(dict(learning_rate=5e-4, warmup_steps=10_000))
    else:
        c.model.update(dict(d_model=64, embedding_size=32, num_heads=4, d_kv=16, d_ff=128, num_encoder_layers=2,
                            num_decoder_layers=2, max_position_embeddings=64))
        c.data.feature_lengths = ml_collections.ConfigDict(dict(inputs=64))
        c.data.batch_size = 16
        c.train.update(dict(num_steps=300, checkpoint_every=100, log_every=20, eval_every=100, eval_steps=4))
        c.optimizer.update(dict(learning_rate=5e-3, warmup_steps=30))
    return c
