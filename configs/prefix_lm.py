"""A decoder-only prefix LM: configs/t5_1_1.py:base as a 12-layer decoder whose inputs prefix
(512 tokens) is fully visible, with the loss on the 512 target tokens."""

import os
import runpy

import ml_collections

t5_1_1 = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "t5_1_1.py"))


def get_config():
    c = t5_1_1["get_config"]("base")
    c.model.update(dict(architecture="decoder_only", decoder_mask="prefix"))
    c.data.task = "builtin_prefix_lm"
    c.data.feature_lengths = ml_collections.ConfigDict(dict(inputs=512, targets=512))
    return c
