"""The original T5 base (the paper's baseline): configs/t5_1_1.py:base with a ReLU MLP of
width 3072, tied input/output embeddings and dropout 0.1."""

import os
import runpy

t5_1_1 = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "t5_1_1.py"))


def get_config():
    c = t5_1_1["get_config"]("base")
    c.model.update(dict(d_ff=3072, mlp_activations=("relu",), tie_embeddings=True, dropout_rate=0.1))
    return c
