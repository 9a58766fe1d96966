"""Tasks named after the user's own files (t5x_lite/data/file_tasks.py): supervised input -> target pairs
from CSV / TSV / JSONL / Parquet, pre-training on a table column, per-split files, the hash split, and a
one-line UserError for every bad spec or file.  All files are tiny and written here."""

import csv
import gzip
import json
import os

import numpy as np
import pytest

import t5x_lite.tasks  # noqa: F401  (registers the metrics file specs name)
from t5x_lite.data import TaskRegistry, get_task_or_mixture, get_vocabulary, make_pipeline
from t5x_lite.data import file_tasks
from t5x_lite.data.sources import in_validation
from t5x_lite.data.tasks import task_from_spec
from t5x_lite.errors import UserError
from t5x_lite.tasks import metrics as M

QUESTIONS = [f"What is {i} plus {i + 1}?" for i in range(120)]
ANSWERS = [str(2 * i + 1) for i in range(120)]


def _write_csv(path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def _write_parquet(path, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table(columns), str(path))
    return str(path)


@pytest.fixture
def registry_cleanup():
    names = []
    yield names
    for n in names:
        TaskRegistry.remove(n)


def test_supervised_csv_hash_split_prefix_and_metrics(tmp_path, registry_cleanup):
    rows = list(zip(QUESTIONS, ANSWERS))
    rows[0] = ('Say "hi", then\na newline', "hi")          # quoted comma, quote and newline survive the csv module
    path = _write_csv(tmp_path / "qa.csv", ["question", "answer"], rows)
    spec = f"csv:{path}?inputs=question&targets=answer&prefix=add:&metrics=accuracy+exact_match"
    registry_cleanup.append(spec)
    task = get_task_or_mixture(spec)
    assert task is get_task_or_mixture(spec) and task.name == spec and task.has_inputs
    assert task.metric_fns == [M.accuracy, M.squad]
    train, val = task.source.get("train"), task.source.get("validation")
    assert len(train) + len(val) == 120 and 0 < len(val) < 30                  # 10% by md5(inputs)
    assert all(in_validation(r["question"], 0.1) for r in val)
    assert not any(in_validation(r["question"], 0.1) for r in train)
    examples = list(task.get_examples("train"))
    by_target = {ex["targets_pretokenized"]: ex for ex in examples}
    vocab = get_vocabulary("builtin")
    if "hi" in by_target:                                                      # (row 0 may sit in validation)
        assert by_target["hi"]["inputs_pretokenized"] == 'add: Say "hi", then\na newline'
    ex = examples[-1]
    assert ex["inputs_pretokenized"].startswith("add: What is ") and ex["inputs"][-1] == 1   # EOS appended
    assert vocab.decode(ex["targets"]) == ex["targets_pretokenized"]
    assert task.postprocess_fn("  7 ", is_target=False) == "7"
    # the older ';' spelling and option order give the same examples
    old = task_from_spec(f"csv:{path};targets=answer;inputs=question;prefix=add: ;metrics=accuracy,exact_match")
    assert [e["inputs_pretokenized"] for e in old.get_examples("validation")] == \
        [e["inputs_pretokenized"] for e in task.get_examples("validation")]


def test_name_option_registers_a_short_name(tmp_path, registry_cleanup):
    path = _write_csv(tmp_path / "qa.csv", ["q", "a"], list(zip(QUESTIONS, ANSWERS)))
    spec = f"csv:{path}?inputs=q&targets=a&name=my_qa"
    registry_cleanup.append("my_qa")
    task = get_task_or_mixture(spec)
    assert task.name == "my_qa" and TaskRegistry.get("my_qa") is task and get_task_or_mixture(spec) is task
    with pytest.raises(UserError, match="already registered"):            # another spec cannot take the name
        get_task_or_mixture(f"csv:{path}?inputs=a&targets=q&name=my_qa")


def test_tsv_jsonl_parquet_with_split_files(tmp_path, registry_cleanup):
    tsv_train = _write_csv(tmp_path / "train.tsv", ["src", "tgt"], [("a, b", "x"), ("c", "y")], delimiter="\t")
    tsv_val = _write_csv(tmp_path / "dev.tsv", ["src", "tgt"], [("d", "z")], delimiter="\t")
    with gzip.open(tmp_path / "train.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"src": "e", "tgt": 3, "other": [1]}) + "\n\n" + json.dumps({"src": "f", "tgt": 4.0}) + "\n")
    (tmp_path / "test.jsonl").write_text(json.dumps({"src": "g", "tgt": "w"}) + "\n")
    pq_train = _write_parquet(tmp_path / "train-00000-of-00001.parquet",
                              {"src": ["h", "i"], "tgt": [0, 1], "idx": np.arange(2, dtype=np.int32)})
    pq_val = _write_parquet(tmp_path / "validation-00000-of-00001.parquet", {"src": ["j"], "tgt": [1], "idx": [0]})
    specs = {
        f"tsv:{tsv_train}?validation={tsv_val}&inputs=src&targets=tgt&metrics=bleu+rouge": (["a, b", "c"], ["z"]),
        f"jsonl:?train={tmp_path}/train.jsonl.gz&test={tmp_path}/test.jsonl&inputs=src&targets=tgt": (["e", "f"], None),
        f"parquet:{pq_train}?validation={pq_val}&inputs=src&targets=tgt&metrics=macro_f1": (["h", "i"], ["1"]),
    }
    for spec, (train_inputs, val_targets) in specs.items():
        registry_cleanup.append(spec)
        task = get_task_or_mixture(spec)
        assert [e["inputs_pretokenized"] for e in task.get_examples("train")] == train_inputs
        if val_targets is None:
            assert task.splits == ("train", "test")
            assert [e["targets_pretokenized"] for e in task.get_examples("train")] == ["3", "4"]   # numbers as text
        else:
            assert [e["targets_pretokenized"] for e in task.get_examples("validation")] == val_targets
    assert get_task_or_mixture(next(iter(specs))).metric_fns == [M.bleu, M.rouge]


def test_a_mixture_of_spec_tasks(tmp_path, registry_cleanup):
    from t5x_lite.data import Mixture, MixtureRegistry
    a = _write_csv(tmp_path / "a.csv", ["q", "a"], [(f"alpha {i}", "A") for i in range(30)])
    b = _write_csv(tmp_path / "b.csv", ["q", "a"], [(f"beta {i}", "B") for i in range(30)])
    specs = [f"csv:{p}?inputs=q&targets=a" for p in (a, b)]
    registry_cleanup.extend(specs)
    MixtureRegistry.add(Mixture("test_spec_mixture", [(specs[0], 1.0), (specs[1], 1.0)]))
    try:
        p = make_pipeline("test_spec_mixture", split="train", feature_lengths={"inputs": 8, "targets": 4},
                          architecture="encoder_decoder", batch_size=16, seed=0, pack=False,
                          process_index=0, process_count=1)
        got = {get_vocabulary("builtin").decode(r) for r in next(p)["decoder_target_tokens"]}
        assert got == {"A", "B"}
    finally:
        MixtureRegistry.remove("test_spec_mixture")


def test_pretraining_on_a_table_column(tmp_path, registry_cleanup):
    docs = [f"row {i} tells of the quick brown fox and the lazy dog number {i}" for i in range(60)]
    path = _write_parquet(tmp_path / "docs.parquet", {"body": docs, "id": list(range(60))})
    spec = f"parquet:{path}?field=body&objective=prefix_lm"
    registry_cleanup.append(spec)
    p = make_pipeline(spec, split="train", feature_lengths={"inputs": 16, "targets": 16},
                      architecture="encoder_decoder", batch_size=2, seed=0, process_index=0, process_count=1)
    batch = next(p)
    assert batch["encoder_input_tokens"].shape == (2, 16)
    task = TaskRegistry.get(spec)
    assert len(task.source.get("train")) + len(task.source.get("validation")) == 60
    assert "fox" in get_vocabulary("builtin").decode(batch["decoder_target_tokens"][0]) + \
        get_vocabulary("builtin").decode(batch["encoder_input_tokens"][0])


def test_data_inspect_and_train_config_take_a_spec(tmp_path, capsys, registry_cleanup):
    from t5x_lite.data import cli as data_cli
    from t5x_lite.train import config as train_config
    from t5x_lite.train.default_config import get_config
    path = _write_csv(tmp_path / "qa.csv", ["question", "answer"], list(zip(QUESTIONS, ANSWERS)))
    spec = f"csv:{path}?inputs=question&targets=answer&prefix=add:&name=inspect_qa"
    registry_cleanup.append("inspect_qa")
    assert data_cli.main(["inspect", "--task", spec, "--num", "2", "--json"]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and all(l["inputs_pretty"].startswith("add: What is") for l in lines)
    assert all(l["targets_pretty"].endswith("</s>") for l in lines)
    config = get_config()
    config.data.task = spec
    model_cfg, resolved = train_config.resolve(config)
    assert resolved["data"]["task"] == spec and model_cfg.vocab_size == 8192


@pytest.mark.parametrize("spec_tail,match", [
    ("qa.csv?inputs=question&target=answer", r"bad option 'target=answer'; did you mean 'targets'\?"),
    ("qa.csv?inputz=question&targets=answer", r"did you mean 'inputs'\?"),
    ("qa.csv?inputs=question", "need both inputs=FIELD and targets=FIELD"),
    ("qa.csv?inputs=questio&targets=answer", r"qa.csv: no column 'questio'; did you mean 'question'\?"),
    ("qa.csv?inputs=question&targets=answer&metrics=acuracy", r"unknown metric 'acuracy'; did you mean 'accuracy'\?"),
    ("qa.csv?inputs=question&targets=answer&objective=prefix_lm", "objective is a pre-training option"),
    ("qa.csv?inputs=question&targets=answer&validation_fraction=2", "validation_fraction='2'"),
    ("qa.csv?inputs=question&targets=answer&name=a/b", "name='a/b' must be"),
    ("qa.csv?train=x.csv&inputs=question&targets=answer", "give the train files once"),
    ("nope.csv?inputs=question&targets=answer", "no file matches"),
    ("empty.csv?inputs=question&targets=answer", "empty.csv: empty file"),
    ("header.csv?inputs=question&targets=answer", "split 'all' is empty"),
    ("ragged.csv?inputs=question&targets=answer", r"ragged.csv:3: 3 fields, the header has 2"),
    ("two.csv?inputs=question&targets=answer", r"none of the 2 examples fell in split 'validation'"),
    ("qa.jsonl?inputs=question&targets=answr", r"qa.jsonl:1: record has no field 'answr'; did you mean 'answer'\?"),
    ("qa.parquet?inputs=q&targets=answer", r"qa.parquet: no column 'q'"),
    ("lfs.parquet?inputs=q&targets=a", "Git LFS pointer"),
])
def test_bad_specs_and_files_are_one_line_user_errors(tmp_path, spec_tail, match, registry_cleanup):
    kinds = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}
    _write_csv(tmp_path / "qa.csv", ["question", "answer"], list(zip(QUESTIONS, ANSWERS)))
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("question,answer\n")
    (tmp_path / "ragged.csv").write_text("question,answer\na,b\nc,d,e\n")
    _write_csv(tmp_path / "two.csv", ["question", "answer"], [("one", "1"), ("two", "2")])
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    _write_parquet(tmp_path / "qa.parquet", {"question": ["q"], "answer": ["a"]})
    (tmp_path / "lfs.parquet").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    spec = f"{kinds[spec_tail.split('?')[0].rsplit('.', 1)[1]]}:{tmp_path}/{spec_tail}"
    registry_cleanup.append(spec)
    with pytest.raises(UserError, match=match) as e:
        task = get_task_or_mixture(spec)
        task.source.get("train")
        task.source.get("validation")
    assert "\n" not in str(e.value)


def test_unknown_kind_and_text_fields():
    with pytest.raises(UserError, match=r"unknown kind 'cvs'; did you mean csv:\?"):
        get_task_or_mixture("cvs:/data/x.csv?inputs=a&targets=b")
    with pytest.raises(UserError, match="text: files have no fields"):
        file_tasks.parse_spec("text:/x/*.txt?inputs=a&targets=b")
    with pytest.raises(UserError, match="paragraphs= applies to text"):
        file_tasks.parse_spec("csv:/x/*.csv?paragraphs=1")
    # "?" inside a glob is a wildcard, not the start of the options
    fs = file_tasks.parse_spec("jsonl:/d/part-?.jsonl?field=body")
    assert fs.splits == {"train": "/d/part-?.jsonl"} and fs.options == {"field": "body"}
    fs = file_tasks.parse_spec("csv:/d/a.csv?inputs=q&targets=a&prefix=Q&A:")   # "&A:" is no option
    assert fs.options["prefix"] == "Q&A:"


def test_eval_cli_on_a_csv_task(tmp_path, capsys, registry_cleanup):
    """`t5x-lite eval --task csv:...` on a tiny random checkpoint writes OUTPUT/<name>/ with the task's metrics."""
    from flax import nnx

    from t5x_lite.checkpoints import save_params_checkpoint
    from t5x_lite.cli import main as cli_main
    from t5x_lite.models import ModelConfig, build_model
    cfg = ModelConfig(architecture="encoder_decoder", vocab_size=8192, d_model=16, num_heads=2, d_kv=8, d_ff=32,
                      num_encoder_layers=1, num_decoder_layers=1).validate()
    model = build_model(cfg, nnx.Rngs(0))
    ckpt = str(tmp_path / "ckpt")
    save_params_checkpoint(ckpt, nnx.to_pure_dict(nnx.state(model, nnx.Param)),
                           {"model": cfg.to_dict(), "vocabulary": "builtin"})
    path = _write_csv(tmp_path / "qa.csv", ["question", "answer"], list(zip(QUESTIONS, ANSWERS)))
    spec = f"csv:{path}?inputs=question&targets=answer&metrics=accuracy+exact_match&name=eval_qa"
    registry_cleanup.append("eval_qa")
    out = tmp_path / "eval"
    code = cli_main(["eval", "--checkpoint", ckpt, "--task", spec, "--output", str(out), "--max-examples", "3",
                     "--max-decode-length", "3"])
    err = capsys.readouterr().err
    assert code == 0, err
    metrics = json.load(open(out / "eval_qa" / "metrics.json"))
    assert {"accuracy", "em", "f1"} <= set(metrics) and metrics["num_examples"] == 3
    rows = [json.loads(l) for l in open(out / "eval_qa" / "predictions.jsonl")]
    val = [r["question"] for r in TaskRegistry.get("eval_qa").source.get("validation")][:3]
    assert [r["inputs"] for r in rows] == val and all(os.path.isfile(out / "eval_qa" / f)
                                                      for f in ("metrics.json", "predictions.jsonl"))
