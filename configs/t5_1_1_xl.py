"""T5.1.1 XL (2.8B): d_model 2048, 32 heads, 24+24 layers, d_ff 5120; FSDP mesh."""

from t5x_lite.train import presets


def get_config():
    return presets.t5_1_1("xl")
