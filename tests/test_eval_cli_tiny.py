"""`t5x-lite eval` / `t5x-lite infer` / train evaluators on tiny random checkpoints.

The checkpoints are made with build_model + save_params_checkpoint (the builtin vocabulary).
A random model's outputs are junk, so the tests pin them down independently: predictions must
equal what t5x_lite.decoding gives for the same prompts, and the task below has one example
whose target IS the model's own greedy output, so its exact-match accuracy must be exactly 1/N.
"""

import json
import os

import pytest

from t5x_lite import decoding
from t5x_lite.cli import main as cli_main
from t5x_lite.data import Feature, InMemorySource, Task, TaskRegistry, get_vocabulary
from t5x_lite.data import preprocessors as pp
from t5x_lite.evaluation import evaluator as ev
from t5x_lite.tasks import metrics as M

INPUTS = ["translate English to German: Open the file.", "translate English to German: Close all windows.",
          "translate English to German: Save as", "translate English to German: Quit now",
          "translate English to German: Print the page"]
TARGETS = ["Datei öffnen.", "Alle Fenster schließen.", "Speichern unter", "Jetzt beenden", "Seite drucken"]


def _save(path, architecture, **extra):
    from flax import nnx

    from t5x_lite.models import ModelConfig, build_model
    from t5x_lite.checkpoints import save_params_checkpoint
    cfg = ModelConfig(architecture=architecture, vocab_size=8192, d_model=32, num_heads=2, d_kv=16, d_ff=64,
                      num_encoder_layers=1, num_decoder_layers=1, **extra).validate()
    model = build_model(cfg, nnx.Rngs(3))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    save_params_checkpoint(path, params, {"model": cfg.to_dict(), "vocabulary": "builtin"})
    return model


def _register(name, examples_by_split):
    vocab = get_vocabulary("builtin")
    feats = {"inputs": Feature(vocab), "targets": Feature(vocab)}
    task = Task(name, InMemorySource(examples_by_split), [pp.tokenize, pp.append_eos], feats,
                metric_fns=[M.sequence_accuracy, M.bleu])
    TaskRegistry.add(task, replace=True)
    return task


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    ckpt = str(root / "ckpt")
    model = _save(ckpt, "encoder_decoder")
    vocab = get_vocabulary("builtin")
    # The model's own greedy output for INPUTS[2] becomes that example's target.
    prompt = decoding.make_prompt("encoder_decoder", [vocab.encode(INPUTS[2]) + [1]])
    own = vocab.decode(decoding.decode(model, prompt, method="greedy", max_decode_length=12)[0].tolist())
    targets = list(TARGETS)
    targets[2] = own
    rows = [{"inputs": i, "targets": t} for i, t in zip(INPUTS, targets)]
    task = _register("test_eval_cli_copy", {"validation": rows, "train": rows})
    return root, ckpt, model, vocab, task, own


def _run(argv, capsys):
    code = cli_main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_eval_writes_predictions_and_metrics(setup, capsys):
    root, ckpt, model, vocab, task, own = setup
    out_dir = str(root / "eval")
    code, out, err = _run(["eval", "--checkpoint", ckpt, "--task", task.name, "--output", out_dir,
                           "--max-decode-length", "12", "--batch-size", "2"], capsys)
    assert code == 0, err
    lines = [json.loads(l) for l in open(os.path.join(out_dir, task.name, "predictions.jsonl"), encoding="utf-8")]
    assert [l["inputs"] for l in lines] == INPUTS
    assert lines[2]["targets"] == own and lines[0]["targets"] == TARGETS[0]
    # Predictions = direct decoding of the same prompts (batched differently).
    prompt = decoding.make_prompt("encoder_decoder", [vocab.encode(x) + [1] for x in INPUTS])
    direct = decoding.decode(model, prompt, method="greedy", max_decode_length=12)
    assert [l["prediction"] for l in lines] == [vocab.decode(r.tolist()) for r in direct]
    metrics = json.load(open(os.path.join(out_dir, task.name, "metrics.json")))
    assert metrics["sequence_accuracy"] == pytest.approx(100.0 / len(INPUTS))
    import sacrebleu
    ref = sacrebleu.corpus_bleu([l["prediction"] for l in lines], [[l["targets"] for l in lines]],
                                tokenize="intl", smooth_method="exp").score
    assert metrics["bleu"] == pytest.approx(ref)
    assert metrics["num_examples"] == len(INPUTS) and metrics["decode"] == "greedy"
    assert "sequence_accuracy=20.00" in out


@pytest.mark.slow
def test_eval_beam_and_max_examples(setup, capsys):
    root, ckpt, model, vocab, task, _ = setup
    out_dir = str(root / "eval_beam")
    code, _, err = _run(["eval", "--checkpoint", ckpt, "--task", task.name, "--output", out_dir, "--decode", "beam",
                         "--beam-size", "3", "--max-examples", "2", "--max-decode-length", "8"], capsys)
    assert code == 0, err
    lines = open(os.path.join(out_dir, task.name, "predictions.jsonl"), encoding="utf-8").read().splitlines()
    assert len(lines) == 2
    prompt = decoding.make_prompt("encoder_decoder", [vocab.encode(x) + [1] for x in INPUTS[:2]])
    direct = decoding.decode(model, prompt, method="beam", beam_size=3, max_decode_length=8)
    assert [json.loads(l)["prediction"] for l in lines] == [vocab.decode(r.tolist()) for r in direct]


@pytest.mark.slow
def test_infer_text_ids_and_sampling(setup, capsys, tmp_path):
    root, ckpt, model, vocab, task, _ = setup
    src = tmp_path / "in.jsonl"
    ids = vocab.encode("Save as") + [1]
    src.write_text(json.dumps({"inputs": "Save as", "id": 7}) + "\n" + json.dumps({"inputs": ids}) + "\n")
    dst = tmp_path / "out.jsonl"
    code, _, err = _run(["infer", "--checkpoint", ckpt, "--input", str(src), "--output", str(dst),
                         "--max-decode-length", "6"], capsys)
    assert code == 0, err
    rows = [json.loads(l) for l in dst.read_text().splitlines()]
    assert rows[0]["id"] == 7 and rows[0]["prediction_ids"] == rows[1]["prediction_ids"]  # EOS appended to text
    direct = decoding.decode(model, decoding.make_prompt("encoder_decoder", [ids]), max_decode_length=6)[0].tolist()
    assert rows[0]["prediction_ids"] == (direct[: direct.index(1) + 1] if 1 in direct else direct)
    assert rows[0]["prediction"] == vocab.decode(direct)
    outs = []
    for seed in ("1", "1", "2"):
        code, _, err = _run(["infer", "--checkpoint", ckpt, "--input", str(src), "--output", str(dst),
                             "--decode", "sample", "--top-k", "50", "--temperature", "1.5", "--seed", seed,
                             "--max-decode-length", "6"], capsys)
        assert code == 0, err
        outs.append([json.loads(l)["prediction_ids"] for l in dst.read_text().splitlines()])
    assert outs[0] == outs[1] and outs[0] != outs[2]


def test_user_errors_are_one_line(setup, capsys, tmp_path):
    root, ckpt, model, vocab, task, _ = setup
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"inputs": [5, 99999]}) + "\n")
    cases = [
        (["infer", "--checkpoint", ckpt, "--input", str(src), "--output", str(tmp_path / "o.jsonl")], "out of range"),
        (["infer", "--checkpoint", str(tmp_path / "nope"), "--input", str(src), "--output", "x"], "not found"),
        (["eval", "--checkpoint", ckpt, "--task", "no_such_task_xyz", "--output", str(tmp_path)], "unknown"),
        (["eval", "--checkpoint", ckpt, "--task", task.name, "--output", str(tmp_path), "--decode", "nope"], "invalid"),
        (["eval", "--checkpoint", ckpt, "--task", task.name, "--output", str(tmp_path), "--num-shots", "2"],
         "decoder_only"),
    ]
    for argv, needle in cases:
        code, _, err = _run(argv, capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (argv, err)
    # Text inputs with a checkpoint that has no vocabulary.
    from t5x_lite.checkpoints import read_config, restore_params, save_params_checkpoint
    novocab = str(tmp_path / "novocab")
    cfg = read_config(ckpt)
    save_params_checkpoint(novocab, restore_params(ckpt), {**cfg, "vocabulary": None})
    src.write_text(json.dumps({"inputs": "hello"}) + "\n")
    code, _, err = _run(["infer", "--checkpoint", novocab, "--input", str(src), "--output", str(tmp_path / "o")],
                        capsys)
    assert code == 2 and "vocabulary" in err


def test_train_evaluators_match_eval(setup):
    root, ckpt, model, vocab, task, _ = setup
    from t5x_lite.train.default_config import get_config
    config = get_config()
    assert ev.make_train_evaluators(config) == []          # evaluation.tasks is empty by default
    config.evaluation.update(dict(tasks=[task.name], split="validation", num_examples=5, batch_size=4,
                                  decode="greedy", max_decode_length=12))
    evaluators = ev.make_train_evaluators(config)
    assert len(evaluators) == 1
    got = evaluators[0](100, model)
    assert got[f"{task.name}/sequence_accuracy"] == pytest.approx(20.0)
    assert set(got) == {f"{task.name}/sequence_accuracy", f"{task.name}/bleu"}


@pytest.mark.slow
def test_decoder_only_lm_format_and_fewshot(tmp_path, capsys):
    ckpt = str(tmp_path / "lm")
    model = _save(ckpt, "decoder_only", decoder_mask="prefix")
    vocab = get_vocabulary("builtin")
    rows = [{"inputs": i, "targets": t} for i, t in zip(INPUTS, TARGETS)]
    task = _register("test_eval_cli_lm", {"validation": rows[:3], "train": rows})
    lm_name = ev.lm_format_task(task.name)
    ex = next(iter(TaskRegistry.get(lm_name).get_examples("validation")))
    assert ex["inputs_pretokenized"] == INPUTS[0] + " target:"
    code, _, err = _run(["eval", "--checkpoint", ckpt, "--task", lm_name, "--output", str(tmp_path / "o"),
                         "--max-decode-length", "5"], capsys)
    assert code == 0, err
    lines = [json.loads(l) for l in open(tmp_path / "o" / lm_name / "predictions.jsonl", encoding="utf-8")]
    assert ex["inputs"].tolist() == vocab.encode(INPUTS[0] + " target:")       # no EOS before the targets
    prompt = decoding.make_prompt("decoder_only", [vocab.encode(INPUTS[k] + " target:") for k in range(3)])
    direct = decoding.decode(model, prompt, max_decode_length=5)
    assert [l["prediction"] for l in lines] == [vocab.decode(r.tolist()) for r in direct]
    code, _, err = _run(["eval", "--checkpoint", ckpt, "--task", task.name, "--output", str(tmp_path / "f"),
                         "--num-shots", "2", "--max-decode-length", "5", "--seed", "3"], capsys)
    assert code == 0, err
    lines = [json.loads(l) for l in open(tmp_path / "f" / task.name / "predictions.jsonl", encoding="utf-8")]
    for l, inp in zip(lines, INPUTS[:3]):
        assert l["prompt"].endswith(inp + " target:") and l["prompt"].count(" target:") == 3
        assert "target:" not in l["prediction"]


def test_fewshot_prompt_helpers():
    from t5x_lite.evaluation import fewshot
    assert fewshot.common_input_prefix(INPUTS) == "translate English to German:"
    assert fewshot.common_input_prefix(["a b", "c d"]) == ""
    cut = fewshot.make_cutter(["target:", "translate English to German:"])
    assert cut(" Datei öffnen translate English to German: Quit target: x") == "Datei öffnen"
    assert cut("Seite drucken") == "Seite drucken"
    vocab = get_vocabulary("builtin")
    task = TaskRegistry.get("test_eval_cli_copy") if "test_eval_cli_copy" in TaskRegistry.names() else \
        _register("test_eval_cli_copy", {"validation": [], "train": []})
    demos = [{"inputs_pretokenized": i, "targets_pretokenized": t} for i, t in zip(INPUTS, TARGETS)]
    query = [{"inputs_pretokenized": INPUTS[0], "targets_pretokenized": TARGETS[0]}]
    ids, texts = fewshot.build_prompts(task, query, demos, 2, seed=1)
    assert texts[0].endswith(INPUTS[0] + " target:") and texts[0].count("target:") == 3
    assert INPUTS[0] + " target: " + TARGETS[0] not in texts[0]     # never its own answer
    assert ids[0] == vocab.encode(texts[0])
    assert fewshot.build_prompts(task, query, demos, 2, seed=1)[1] == texts     # seeded
    short_ids, short_texts = fewshot.build_prompts(task, query, demos, 4, seed=1, max_prompt_length=30)
    assert len(short_ids[0]) <= 30 and short_texts[0].endswith(INPUTS[0] + " target:")
