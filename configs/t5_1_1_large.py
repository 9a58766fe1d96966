"""T5.1.1 large (783M): d_model 1024, 16 heads, 24+24 layers, d_ff 2816; FSDP mesh."""

from t5x_lite.train import presets


def get_config():
    return presets.t5_1_1("large")
