"""Vocabularies (T5 id conventions), `t5x-lite vocab train` (unigram and bpe) and `t5x-lite data ...`."""

import json

import pytest

from t5x_lite.cli import main as t5x_lite_main
from t5x_lite.data import ByteVocabulary, get_vocabulary
from t5x_lite.data.cli import main as data_main, vocab_main
from t5x_lite.errors import UserError
from t5x_lite.train import default_config

def test_builtin_vocabulary_conventions():
    v = get_vocabulary("builtin")
    assert (v.pad_id, v.eos_id, v.unk_id, v.extra_ids, v.vocab_size) == (0, 1, 2, 100, 8100)
    assert v.sentinel_id(0) == 8099 and v.sentinel_id(99) == 8000 and v.first_sentinel_id == 8000
    ids = v.encode("Who is there? <extra_id_0> the dog <extra_id_1>")
    assert 8099 in ids and 8098 in ids and max(i for i in ids if i < 8000) < 8000
    assert v.decode(v.encode("To be, or not to be")) == "To be, or not to be"
    assert v.decode(v.encode("stop here") + [1] + v.encode("ignored")) == "stop here"   # stops at EOS
    assert v.decode([0, 0] + v.encode("pad dropped") + [0]) == "pad dropped"
    assert "<extra_id_0>" in v.decode(ids)
    assert v.decode_batch(v.encode_batch(["a cat", "a dog"])) == ["a cat", "a dog"]


def test_byte_vocabulary():
    v = get_vocabulary("byte")
    assert isinstance(v, ByteVocabulary) and v.vocab_size == 3 + 256 + 100
    assert v.encode("hé") == [ord("h") + 3, 0xC3 + 3, 0xA9 + 3]
    assert v.decode(v.encode("héllo wörld") + [1, 50]) == "héllo wörld"
    assert v.encode("<extra_id_0>") == [v.vocab_size - 1]
    assert get_vocabulary("byte:125").vocab_size == 259 + 125


def test_bad_vocabulary_specs(tmp_path):
    with pytest.raises(UserError, match="unknown vocabulary spec"):
        get_vocabulary("bpe32k")
    with pytest.raises(UserError, match="not found"):
        get_vocabulary(f"spm:{tmp_path}/missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot load"):
        get_vocabulary(f"spm:{bad}")


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_vocab_train_cli(tmp_path, model_type):
    from t5x_lite.data import BuiltinSource
    corpus = tmp_path / "corpus.txt"
    docs = BuiltinSource().get("validation")
    corpus.write_text("\n".join(docs[i]["text"] for i in range(600)) + "\n")
    prefix = str(tmp_path / f"v_{model_type}")
    assert vocab_main(["train", "--input", str(tmp_path / "*.txt"), "--vocab-size", "250", "--no-byte-fallback",
                       "--model-type", model_type, "--out", prefix]) == 0
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert sp.get_piece_size() == 250
    from sentencepiece import sentencepiece_model_pb2 as model_pb2
    proto = model_pb2.ModelProto()
    proto.ParseFromString(open(prefix + ".model", "rb").read())
    assert proto.trainer_spec.model_type == {"unigram": 1, "bpe": 2}[model_type]
    # same input and seed -> the same pieces and scores (only trainer_spec.model_prefix differs)
    assert vocab_main(["train", "--input", str(corpus), "--vocab-size", "250", "--model-type", model_type,
                       "--no-byte-fallback", "--out", prefix + "_again"]) == 0
    again = model_pb2.ModelProto()
    again.ParseFromString(open(prefix + "_again.model", "rb").read())
    assert [(p.piece, p.score) for p in again.pieces] == [(p.piece, p.score) for p in proto.pieces]
    v = get_vocabulary(f"spm:{prefix}.model:10")
    assert v.vocab_size == 260 and v.decode(v.encode("the lazy dog")) == "the lazy dog"


def test_vocab_train_errors(tmp_path, capsys):
    assert t5x_lite_main(["vocab", "train", "--input", str(tmp_path / "none*.txt"), "--vocab-size", "50",
                          "--out", str(tmp_path / "x")]) == 2
    assert "no file matches" in capsys.readouterr().err
    (tmp_path / "tiny.txt").write_text("ab\n")
    assert t5x_lite_main(["vocab", "train", "--input", str(tmp_path / "tiny.txt"), "--vocab-size", "5000",
                          "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "SentencePiece training failed" in err and len(err.strip().splitlines()) == 1


def test_data_list(capsys):
    assert data_main(["list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    names = {r["name"] for r in rows}
    for name in ("builtin_span_corruption", "builtin_iid_denoising", "builtin_prefix_lm", "builtin_lm",
                 "builtin_bert_style", "builtin_mass_style", "builtin_drop_tokens", "builtin_deshuffle",
                 "builtin_mlm", "c4_v220_span_corruption", "c4_v220_iid_denoising", "c4_v220_prefix_lm",
                 "c4_v220_full_lm"):
        assert name in names
    assert all(r["description"] for r in rows)


def test_data_inspect_json(capsys):
    assert data_main(["inspect", "--task", "builtin_span_corruption", "--num", "2", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    v = get_vocabulary("builtin")
    for line in lines:
        ex = json.loads(line)
        # the default training run's lengths (train/default_config.py: 128/32), before packing: span
        # corruption fills the inputs exactly; its targets (29 tokens at 128) fit the 32 they are padded to
        lengths = default_config.get_config().data.feature_lengths
        assert len(ex["inputs"]) == lengths.inputs == 128 and 20 < len(ex["targets"]) <= lengths.targets == 32
        assert ex["inputs"][-1] == 1 and ex["targets"][0] == v.vocab_size - 1
        assert ex["inputs_pretty"].endswith("</s>") and "<extra_id_0>" in ex["targets_pretty"]
        assert ex["targets_pretty"] == v.decode(ex["targets"]) + "</s>"


def test_data_inspect_text_and_errors(capsys):
    assert data_main(["inspect", "--task", "builtin_lm", "--num", "1", "--targets-length", "20"]) == 0
    out = capsys.readouterr().out
    assert "targets (20 ids)" in out and "targets_pretty:" in out
    assert t5x_lite_main(["data", "inspect", "--task", "builtin_spam_corruption"]) == 2
    err = capsys.readouterr().err
    assert "did you mean: builtin_span_corruption" in err and len(err.strip().splitlines()) == 1
    assert t5x_lite_main(["data", "inspect"]) == 2
    assert "--task" in capsys.readouterr().err


def test_build_local_dispatch(monkeypatch):
    from t5x_lite.builders import local as builder
    calls = []
    monkeypatch.setattr(builder, "main", lambda argv: calls.append(argv) or 0)
    assert data_main(["build-local", "--only", "x"]) == 0 and calls == [["--only", "x"]]


def test_build_local_help_and_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        data_main(["build-local", "--help"])
    assert e.value.code == 0 and "--max-examples" in capsys.readouterr().out
    assert t5x_lite_main(["data", "build-local", "--max-examples", "x"]) == 2
    err = capsys.readouterr().err
    assert "--max-examples" in err and len(err.strip().splitlines()) == 1


def test_data_module_flag(tmp_path, monkeypatch, capsys):
    """`--module NAME` imports a user's module that registers a task; list and inspect then see it."""
    (tmp_path / "my_c1_tasks.py").write_text(
        "from t5x_lite.data import Feature, InMemorySource, Task, TaskRegistry, get_vocabulary\n"
        "from t5x_lite.data import preprocessors as pp\n"
        "v = get_vocabulary('builtin')\n"
        "TaskRegistry.add(Task('my_c1_copy', InMemorySource({'validation': [{'inputs': 'a b', 'targets': 'a b'}]}),\n"
        "                      [pp.tokenize, pp.append_eos], {'inputs': Feature(v), 'targets': Feature(v)},\n"
        "                      description='my own copy task'), replace=True)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert t5x_lite_main(["data", "inspect", "--task", "my_c1_copy_nope"]) == 2
    assert "--module" in capsys.readouterr().err          # the unknown-name error points at --module
    try:
        assert data_main(["list", "--module", "my_c1_tasks"]) == 0
        assert any(line.split()[:2] == ["my_c1_copy", "task"] for line in capsys.readouterr().out.splitlines())
        assert data_main(["inspect", "--task", "my_c1_copy", "--module", "my_c1_tasks", "--json"]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[0])["targets_pretty"] == "a b</s>"
    finally:
        import sys
        from t5x_lite.data import TaskRegistry
        TaskRegistry.remove("my_c1_copy")
        sys.modules.pop("my_c1_tasks", None)
    assert t5x_lite_main(["data", "list", "--module", "no_such_module_c1"]) == 2
    assert "--module no_such_module_c1" in capsys.readouterr().err
