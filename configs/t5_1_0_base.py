"""Original T5 base (paper baseline): ReLU, tied embeddings, dropout 0.1, d_ff 3072."""

from t5x_lite.train import presets


def get_config():
    return presets.t5_1_0_base()
