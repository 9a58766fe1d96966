"""Fine-tuning (configs/finetune.py:TASK + init_checkpoint) and evaluation, on a tiny in-memory task.

The "pre-trained" checkpoint is a random tiny model saved with save_params_checkpoint; fine-tuning
runs 3 steps through the real trainer (params and model section from init_checkpoint, constant
LR 0.001) with the decode-based train evaluator, then `t5x-lite eval` scores the fine-tuned workdir.
"""

import dataclasses
import importlib.util
import json
import os

import numpy as np
import pytest

from t5x_lite.cli import main as cli_main
from t5x_lite.data import Feature, InMemorySource, Task, TaskRegistry, get_vocabulary
from t5x_lite.data import preprocessors as pp
from t5x_lite.tasks import metrics as M
from t5x_lite.tasks import postprocessors as P

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ["noun.animal", "noun.plant", "verb.motion"]
GLOSSES = ["a small domestic cat", "a tall tree with needles", "move fast on foot", "a large wild dog",
           "a flowering shrub", "walk slowly", "a bird of prey", "a climbing vine"]
GOLD = [0, 1, 2, 0, 1, 2, 0, 1]


def _load_config(task):
    spec = importlib.util.spec_from_file_location("finetune_config", os.path.join(ROOT, "configs", "finetune.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(task)


@pytest.mark.parametrize("task", ["local_translate_en_de", "local_wordnet_lexname", "local_summarize_debian",
                                  "local_mixture", "prefix_lm_local_translate_en_de"])
def test_finetune_configs_follow_the_paper(task):
    from t5x_lite.train import config as config_lib
    c = _load_config(task)
    config_lib.validate(c)
    assert c.optimizer.schedule == "constant" and c.optimizer.learning_rate == 0.001
    assert c.model.dropout_rate == 0.1 and c.evaluation.decode == "greedy" and c.init_checkpoint == ""
    assert c.evaluation.tasks and all(t in TaskRegistry.names() for t in c.evaluation.tasks)
    if task.startswith("prefix_lm"):
        assert c.data.task == "local_translate_en_de_lm_format" and c.model.decoder_mask == "prefix"


@pytest.mark.slow
def test_finetune_from_init_checkpoint_then_eval(tmp_path, capsys):
    import ml_collections
    from flax import nnx

    from t5x_lite import loading
    from t5x_lite.checkpoints import restore_params, save_params_checkpoint
    from t5x_lite.models import ModelConfig, build_model
    from t5x_lite.train.loop import train

    vocab = get_vocabulary("builtin")
    rows = [{"inputs": f"lexname gloss: {g}", "targets": LABELS[y]} for g, y in zip(GLOSSES, GOLD)]
    task = Task("test_finetune_lexname", InMemorySource({"train": rows, "validation": rows}),
                [pp.tokenize, pp.append_eos_after_trim], {"inputs": Feature(vocab), "targets": Feature(vocab)},
                metric_fns=[M.accuracy], postprocess_fn=P.make_label_postprocessor(LABELS))
    TaskRegistry.add(task, replace=True)

    # The "pre-trained" checkpoint: a tiny model with its own random params.  The fine-tuning
    # config does not repeat its sizes: the model section comes from the checkpoint.
    pretrained = ModelConfig(vocab_size=-(-vocab.vocab_size // 128) * 128, d_model=32, num_heads=2, d_kv=16,
                             d_ff=64, num_encoder_layers=1, num_decoder_layers=1).validate()
    init_params = nnx.to_pure_dict(nnx.state(build_model(pretrained, nnx.Rngs(123)), nnx.Param))
    init_dir = str(tmp_path / "pretrained")
    save_params_checkpoint(init_dir, init_params, {"model": pretrained.to_dict(), "vocabulary": "builtin"})

    c = _load_config("local_wordnet_lexname")
    c.data.task = task.name
    c.data.batch_size = 8
    c.data.feature_lengths = ml_collections.ConfigDict(dict(inputs=16, targets=8))
    c.train.update(dict(num_steps=3, checkpoint_every=3, eval_every=3, eval_steps=1, log_every=1,
                        async_checkpointing=False))
    c.evaluation.update(dict(tasks=[task.name], num_examples=8, batch_size=8, max_decode_length=6))
    c.init_checkpoint = init_dir

    workdir = str(tmp_path / "ft")
    assert train(c, workdir, show_progress=False) == 0
    tuned = restore_params(os.path.join(workdir, "checkpoints"))
    saved = loading.open_checkpoint(workdir).model_config
    assert saved == dataclasses.replace(pretrained, dropout_rate=0.1)      # the checkpoint's model, dropout 0.1
    flat_init = np.concatenate([np.ravel(x) for x in _leaves(init_params)])
    flat_tuned = np.concatenate([np.ravel(x) for x in _leaves(tuned)])
    # Started from the init params (3 small steps away), not from a fresh random init.
    assert 0 < np.abs(flat_tuned - flat_init).max() < 0.1 * np.abs(flat_init).max()

    best = json.load(open(os.path.join(workdir, "best_checkpoints.json")))
    key = f"eval/{task.name}/accuracy"
    assert key in best and best[key]["step"] == 3

    out = str(tmp_path / "eval")
    assert cli_main(["eval", "--checkpoint", workdir, "--task", task.name,
                     "--output", out, "--max-decode-length", "6"]) == 0
    metrics = json.load(open(os.path.join(out, task.name, "metrics.json")))
    preds = [json.loads(l) for l in open(os.path.join(out, task.name, "predictions.jsonl"))]
    # The CLI's accuracy is the label postprocessor + exact match over its own predictions,
    # and equals what the train evaluator computed on the same params.
    hits = [P.make_label_postprocessor(LABELS)(p["prediction"]) == GOLD[i] for i, p in enumerate(preds)]
    assert metrics["accuracy"] == pytest.approx(100.0 * np.mean(hits))
    assert metrics["accuracy"] == pytest.approx(best[key]["value"])
    capsys.readouterr()


def _leaves(tree):
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves(tree[k])
    else:
        yield np.asarray(tree)
