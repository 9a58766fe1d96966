"""T5 paper Table 2 architectures at base size:  --config configs/table2.py:ARCH  with ARCH one of
encoder_decoder, enc_dec_shared, enc_dec_6_layers, language_model, prefix_lm.

Each is configs/t5_1_0_base.py reshaped by t5x_lite.models.table2_configs and trained with the
baseline i.i.d. denoising objective (decoder-only models read inputs ++ targets) for the
paper's 2^18 steps."""

import os
import runpy

from t5x_lite.models import ModelConfig, table2_configs

t5_1_0_base = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "t5_1_0_base.py"))


def get_config(arch="encoder_decoder"):
    c = t5_1_0_base["get_config"]()
    archs = table2_configs(ModelConfig.from_dict(c.model.to_dict()))
    if arch not in archs:
        raise ValueError(f"configs/table2.py:ARCH must be one of {'|'.join(archs)}, got {arch!r}")
    c.model.update({k: tuple(v) if isinstance(v, list) else v for k, v in archs[arch].to_dict().items()})
    c.data.task = "builtin_iid_denoising"
    c.train.num_steps = 2 ** 18
    return c
