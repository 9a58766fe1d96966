"""A checkpoint resumes when only an execution setting changed (model.attention_impl,
model.remat_policy), or when it was saved before such a setting existed; any other model change is
still refused in one line."""

import json

from t5x_lite import checkpoints
from t5x_lite.train import default_config, loop


def _tiny(num_steps, **model):
    c = default_config.get_config()
    c.model.update({**dict(d_model=32, num_heads=2, d_kv=16, d_ff=64, num_encoder_layers=1, num_decoder_layers=1),
                    **model})
    c.data.feature_lengths.inputs, c.data.feature_lengths.targets = 32, 8
    c.data.batch_size = 8
    c.train.update(dict(num_steps=num_steps, log_every=2, checkpoint_every=2, eval_every=0))
    return c


def test_same_model_ignores_only_execution_settings():
    saved = {"d_model": 32, "num_heads": 2, "remat_policy": "none"}          # saved before attention_impl existed
    assert checkpoints.same_model(saved, {**saved, "attention_impl": "auto"})
    assert checkpoints.same_model(saved, {**saved, "attention_impl": "xla", "remat_policy": "full"})
    assert not checkpoints.same_model(saved, {**saved, "d_model": 64, "attention_impl": "auto"})
    assert not checkpoints.same_model(None, saved)


def test_resume_under_another_attention_impl_and_remat_policy(tmp_path):
    """(A real change of the model is refused: tests/test_checkpoint_integrity.py.)"""
    workdir = str(tmp_path / "run")
    assert loop.train(_tiny(2, attention_impl="einsum"), workdir, show_progress=False) == 0
    assert loop.train(_tiny(4, attention_impl="xla", remat_policy="full"), workdir, show_progress=False) == 0
    rows = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
    assert max(r["step"] for r in rows) == 4            # steps 3-4 ran on the resumed state
