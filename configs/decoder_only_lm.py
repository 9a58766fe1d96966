"""A GPT-style causal LM: configs/t5_1_1.py:base as a decoder-only stack of 12 layers,
on the targets-only LM task with 512-token sequences."""

import os
import runpy

import ml_collections

t5_1_1 = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "t5_1_1.py"))


def get_config():
    c = t5_1_1["get_config"]("base")
    c.model.architecture = "decoder_only"
    c.data.task = "builtin_lm"
    c.data.feature_lengths = ml_collections.ConfigDict(dict(targets=512))
    return c
