"""T5.1.1 XXL (11B): d_model 4096, 64 heads, 24+24 layers, d_ff 10240; FSDP mesh."""

from t5x_lite.train import presets


def get_config():
    return presets.t5_1_1("xxl")
