"""Fine-tuning encoder classifiers (configs/bert.py:finetune_TASK, data/classification.py,
train/finetune_init.py, evaluation/classify.py): what init_checkpoint loads, drops and freshly
initialises; the model section and label words of the resolved config; and a real run through the
trainer on a toy task that ends above the majority-class baseline, scored by the task's own metrics
(eval) and printing label names (infer)."""

import importlib.util
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from t5x_lite import loading, partitioning
from t5x_lite.checkpoints import save_params_checkpoint
from t5x_lite.data import InMemorySource, TaskRegistry, get_vocabulary
from t5x_lite.errors import UserError
from t5x_lite.models import ModelConfig, build_model
from t5x_lite.tasks import metrics as M
from t5x_lite.tasks import postprocessors as P
from t5x_lite.tasks.downstream import text_task
from t5x_lite.train import finetune_init

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = "test_toy_topic"
LABELS = ("animal", "plant", "other")
VOCAB = get_vocabulary("byte")
BERT = dict(architecture="encoder_only", vocab_size=384, d_model=32, num_heads=2, d_kv=16, d_ff=64,
            num_encoder_layers=1, position_embedding="learned", max_position_embeddings=64, type_vocab_size=2,
            nsp_head=True, mlp_activations=("gelu_exact",), tie_embeddings=True, classifier_pooling="first")


def _toy_rows(n, seed):
    """'topic: <words>' -> animal if an animal word occurs, plant if a plant word, else other (~50%)."""
    rng = np.random.default_rng(seed)
    filler = ["the", "a", "big", "red", "old", "sat", "ran", "near", "blue", "hill"]
    words = {"animal": ["cat", "dog", "cow"], "plant": ["oak", "fern", "rose"]}
    rows = []
    for _ in range(n):
        label = LABELS[int(rng.choice(3, p=[0.25, 0.25, 0.5]))]
        text = list(rng.choice(filler, 4))
        if label != "other":
            text.insert(int(rng.integers(0, 5)), str(rng.choice(words[label])))
        rows.append({"text": " ".join(text), "topic": label})
    return rows


def _fmt(ex, ctx):
    return {"inputs": "topic: " + ex["text"], "targets": ex["topic"]}


if TASK not in TaskRegistry:
    TaskRegistry.add(text_task(TASK, InMemorySource({"train": _toy_rows(4000, 0), "validation": _toy_rows(128, 1)}),
                               _fmt, [M.accuracy_and_macro_f1], P.make_label_postprocessor(LABELS), vocabulary=VOCAB))


def _bert_config(name):
    spec = importlib.util.spec_from_file_location("bert_config", os.path.join(ROOT, "configs", "bert.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(name)


def _save(path, cfg, seed=1):
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(build_model(cfg, nnx.Rngs(seed)), nnx.Param)))
    save_params_checkpoint(str(path), params, {"model": cfg.to_dict(), "vocabulary": "byte"})
    return loading.flatten_params(params)


def _target_and_fresh(cfg):
    mesh = loading.single_device_mesh()
    state = nnx.state(nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0))), nnx.Param)
    shardings = partitioning.named(mesh, partitioning.param_specs(state, mesh))
    target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          nnx.to_pure_dict(state), shardings)
    fresh = nnx.to_pure_dict(nnx.state(build_model(cfg, nnx.Rngs(5)), nnx.Param))
    return target, fresh


def test_init_from_pretraining_checkpoints_drops_heads_and_initialises_the_classifier(tmp_path):
    classifier = ModelConfig(**{**BERT, "nsp_head": False, "num_classes": 3})
    target, fresh = _target_and_fresh(classifier)
    want = loading.flatten_params(target)
    fresh_flat = loading.flatten_params(fresh)

    saved = _save(tmp_path / "bert", ModelConfig(**{**BERT, "tie_embeddings": False}))   # MLM output + NSP head
    params, line = finetune_init.load_init_params(str(tmp_path / "bert"), target, fresh)
    got = loading.flatten_params(params)
    assert set(got) == set(want)
    for k in want:
        expected = fresh_flat[k] if k[0] == "classifier" else saved[k]
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(expected))
        assert got[k].sharding == want[k].sharding
    assert "dropped encoder/logits_dense, nsp_head (not in this model)" in line and line.endswith(
        "freshly initialised classifier")

    # a T5 encoder-decoder: its encoder loads, the decoder is dropped, pooler + classifier are new
    t5 = ModelConfig(**{**{k: BERT[k] for k in ("vocab_size", "d_model", "num_heads", "d_kv", "d_ff")},
                        "num_encoder_layers": 1, "num_decoder_layers": 1})
    saved = _save(tmp_path / "t5", t5)
    cls_rel = ModelConfig(**{**t5.to_dict(), "architecture": "encoder_only", "num_classes": 3,
                             "classifier_pooling": "first"})
    target, fresh = _target_and_fresh(cls_rel)
    params, line = finetune_init.load_init_params(str(tmp_path / "t5"), target, fresh)
    got = loading.flatten_params(params)
    np.testing.assert_array_equal(np.asarray(got[("encoder", "layers_0", "mlp", "wo", "kernel")]),
                                  saved[("encoder", "layers_0", "mlp", "wo", "kernel")])
    assert "dropped decoder" in line and "freshly initialised classifier, pooler" in line

    # anything but a head missing or reshaped is the one-line error
    target, fresh = _target_and_fresh(ModelConfig(**{**BERT, "d_ff": 48, "nsp_head": False, "num_classes": 3}))
    with pytest.raises(UserError, match="holds a different model: param encoder/layers_0/mlp/wi/kernel has shape"):
        finetune_init.load_init_params(str(tmp_path / "bert"), target, fresh)


def test_init_from_an_electra_checkpoint_keeps_the_discriminator(tmp_path):
    pytest.importorskip("t5x_lite.models.electra")
    electra = ModelConfig(**{**BERT, "architecture": "electra", "nsp_head": False, "type_vocab_size": 0})
    saved = _save(tmp_path / "electra", electra)
    target, fresh = _target_and_fresh(ModelConfig(**{**electra.to_dict(), "architecture": "encoder_only",
                                                     "num_classes": 3}))
    params, line = finetune_init.load_init_params(str(tmp_path / "electra"), target, fresh)
    got = loading.flatten_params(params)
    key = ("encoder", "layers_0", "attention", "query", "kernel")
    np.testing.assert_array_equal(np.asarray(got[key]), saved[key])
    assert "generator" in line.split("dropped")[1] and "rtd_head" in line.split("dropped")[1]
    assert "freshly initialised classifier, pooler" in line


def test_finetune_config_resolves_a_classifier_from_a_bert_checkpoint(tmp_path):
    from t5x_lite.train import config as config_lib
    _save(tmp_path / "bert", ModelConfig(**BERT))
    c = _bert_config(f"finetune_{TASK}")
    c.init_checkpoint = str(tmp_path / "bert")
    model_cfg, resolved = config_lib.resolve(c)
    got = (model_cfg.num_classes, model_cfg.nsp_head, model_cfg.type_vocab_size, model_cfg.d_model)
    assert got == (3, False, 2, 32)
    assert model_cfg.classifier_pooling == "first" and model_cfg.dropout_rate == 0.1
    assert resolved["class_labels"] == list(LABELS) and resolved["vocabulary"] == "byte"
    c.model.num_classes = 4
    with pytest.raises(UserError, match="has 3 labels but model.num_classes=4"):
        config_lib.resolve(c)


def test_classifier_trains_above_the_majority_baseline_then_eval_and_infer(tmp_path, capsys):
    from t5x_lite.cli import main as cli_main
    from t5x_lite.train.loop import train

    _save(tmp_path / "bert", ModelConfig(**{**BERT, "num_encoder_layers": 2}))   # one layer learns too slowly
    c = _bert_config(f"finetune_{TASK}")
    c.init_checkpoint = str(tmp_path / "bert")
    c.data.feature_lengths.inputs = 32
    c.data.batch_size = 32
    c.model.dropout_rate = 0.0
    c.train.update(dict(num_steps=100, eval_every=100, checkpoint_every=100, log_every=50, eval_steps=2))
    c.optimizer.update(dict(learning_rate=3e-3, warmup_steps=5))
    c.evaluation.update(dict(num_examples=128, batch_size=64))
    workdir = str(tmp_path / "ft")
    assert train(c, workdir, show_progress=False) == 0
    log = capsys.readouterr().err
    assert "dropped nsp_head (not in this model); freshly initialised classifier" in log

    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    final = [r for r in rows if f"eval/{TASK}/accuracy" in r][-1]
    gold = [r["topic"] for r in _toy_rows(128, 1)]
    majority = 100.0 * max(gold.count(label) for label in LABELS) / len(gold)
    assert final[f"eval/{TASK}/accuracy"] > majority + 20, (final, majority)
    assert final["eval/class_accuracy"] > majority + 20 and f"eval/{TASK}/macro_f1" in final

    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    probe = _toy_rows(128, 1)[:32]   # validation rows: the eval above scored these
    inp.write_text("".join(json.dumps({"inputs": "topic: " + r["text"]}) + "\n" for r in probe))
    assert cli_main(["infer", "--checkpoint", workdir, "--input", str(inp), "--output", str(out)]) == 0
    preds = [json.loads(line) for line in open(out)]
    assert all(p["prediction"] == LABELS[p["prediction_id"]] == max(p["probabilities"], key=p["probabilities"].get)
               for p in preds)
    assert sum(p["prediction"] == r["topic"] for p, r in zip(preds, probe)) > 0.7 * len(probe)

    # `t5x-lite eval` on the classifier: the task's metrics, and metrics.json says no decoding happened.
    out_dir = tmp_path / "eval"
    assert cli_main(["eval", "--checkpoint", workdir, "--task", TASK, "--output", str(out_dir),
                     "--max-examples", "64", "--no-progress"]) == 0
    written = json.loads((out_dir / TASK / "metrics.json").read_text())
    assert written["decode"] == "argmax class (classifier)" and written["num_examples"] == 64
    assert written["accuracy"] > majority + 20


def test_classifier_eval_never_reads_past_the_learned_positions():
    """The toy examples are ~35 byte tokens; a classifier with 16 learned positions is evaluated on
    them truncated to 16 tokens, both by `t5x-lite eval` (no inputs length given: the default 512 is
    capped by the model) and by the trainer's evaluator (the training inputs length).  Before, both
    asked for the examples' full length and stopped with 'exceeds model.max_position_embeddings'."""
    from t5x_lite.data import get_task_or_mixture
    from t5x_lite.evaluation import evaluator as ev

    cfg = ModelConfig(**{**BERT, "nsp_head": False, "num_classes": len(LABELS), "max_position_embeddings": 16})
    model = build_model(cfg, nnx.Rngs(0))
    task = get_task_or_mixture(TASK)
    records, metrics = ev.evaluate_task(model, task, max_examples=8)
    assert len(records) == 8 and 0.0 <= metrics["accuracy"] <= 100.0
    out = ev._TrainEvaluator(task, "validation", 8, ev.DecodeSettings(), inputs_length=16)(0, model)
    assert set(out) == {f"{TASK}/accuracy", f"{TASK}/macro_f1"}
