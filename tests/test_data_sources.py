"""Sources (text lines, blank-line paragraphs, .gz, JSONL field, builtin split) and the seqio-like building
blocks, plus the paper's own span-corruption example as a golden case."""

import gzip
import json

import numpy as np
import pytest

from t5x_lite.data import BuiltinSource, JsonlSource, TextLineSource, get_vocabulary
from t5x_lite.data import preprocessors as pp
from t5x_lite.data.preprocessors import Context, Feature
from t5x_lite.errors import UserError


def test_text_lines_and_paragraphs(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\nsecond doc\nthird doc\n")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
        f.write("fourth doc\n")
    lines = TextLineSource({"train": str(tmp_path / "*.txt*")}).get("train")
    assert [lines[i]["text"] for i in range(len(lines))] == ["first doc", "second doc", "third doc", "fourth doc"]
    paras = TextLineSource({"train": str(tmp_path / "a.txt")}, blank_line_separated=True).get("train")
    assert [paras[i]["text"] for i in range(len(paras))] == ["first doc", "second doc third doc"]
    with pytest.raises(UserError, match="unknown split 'validation'"):
        TextLineSource({"train": str(tmp_path / "a.txt")}).get("validation")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(UserError, match="empty"):
        TextLineSource({"train": str(tmp_path / "empty.txt")}).get("train")


def test_jsonl_field(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"body": f"text {i}", "id": i}) for i in range(3)) + "\n")
    rows = JsonlSource({"train": str(path)}, field="body", rename="text").get("train")
    assert len(rows) == 3 and rows[2] == {"text": "text 2"}
    assert JsonlSource({"train": str(path)}).get("train")[1] == {"body": "text 1", "id": 1}
    with pytest.raises(UserError, match="no field 'missing'"):
        JsonlSource({"train": str(path)}, field="missing").get("train")
    path.write_text('{"body": "ok"}\n{not json\n')
    with pytest.raises(UserError, match="invalid JSON"):
        JsonlSource({"train": str(path)}, field="body").get("train")


def test_builtin_split_is_deterministic_and_disjoint():
    import hashlib
    src = BuiltinSource()
    train, val = src.get("train"), src.get("validation")
    assert len(train) > 100_000 and 0.01 < len(val) / (len(train) + len(val)) < 0.02
    for i in range(0, len(val), 97):
        assert hashlib.md5(val[i]["text"].encode()).digest()[0] < 4
    for i in range(0, len(train), 997):
        assert hashlib.md5(train[i]["text"].encode()).digest()[0] >= 4


def test_building_blocks():
    vocab = get_vocabulary("builtin")
    feats = {"inputs": Feature(vocab), "targets": Feature(vocab, add_eos=False)}
    ctx = Context(0, 0, 0, {"inputs": 4, "targets": 3}, feats)
    ex = pp.rekey({"inputs": "question", "targets": "answer"})({"question": "a b c d e f", "answer": "yes"}, ctx)
    ex = pp.tokenize(ex, ctx)
    assert ex["inputs_pretokenized"] == "a b c d e f" and vocab.decode(ex["inputs"]) == "a b c d e f"
    eos = pp.append_eos(ex, ctx)
    assert eos["inputs"][-1] == 1 and eos["targets"].tolist() == ex["targets"].tolist()   # add_eos=False
    trimmed = pp.append_eos_after_trim(ex, ctx)
    assert len(trimmed["inputs"]) == 4 and trimmed["inputs"][-1] == 1
    assert trimmed["inputs"][:3].tolist() == ex["inputs"][:3].tolist()
    tokens = np.arange(3, 200_003, dtype=np.int32)
    starts = set()
    for i in range(20):   # T5: one of the ceil(n / 65536) aligned windows, the last one shorter
        chunk = pp.select_random_chunk(65536)({"targets": tokens}, Context(0, 0, i, {}, feats))["targets"]
        assert (chunk[0] - 3) % 65536 == 0 and np.all(np.diff(chunk) == 1)
        assert len(chunk) == min(65536, 200_003 - chunk[0])
        starts.add(int(chunk[0]))
    assert len(starts) > 1
    joined = pp.reduce_concat_tokens([np.array([5, 6]), np.array([7]), np.array([8, 9, 10])])
    assert joined.tolist() == [5, 6, 7, 8, 9, 10]
    assert [s.tolist() for s in pp.split_tokens(joined, 4)] == [[5, 6, 7, 8], [9, 10]]


def test_paper_example_golden():
    """Raffel et al. Fig. 2: 'Thank you <X> me to your party <Y> week.' -> '<X> for inviting <Y> last <Z>'."""
    words = "Thank you for inviting me to your party last week .".split()
    ids = np.arange(3, 3 + len(words), dtype=np.int32)
    mask = np.array([w in ("for", "inviting", "last") for w in words])
    vocab_size = 100
    inputs = pp.noise_span_to_unique_sentinel(ids, mask, vocab_size)
    targets = pp.nonnoise_span_to_unique_sentinel(ids, mask, vocab_size)
    name = {int(i): w for i, w in zip(ids, words)} | {99: "<X>", 98: "<Y>", 97: "<Z>"}
    assert " ".join(name[int(i)] for i in inputs) == "Thank you <X> me to your party <Y> week ."
    assert " ".join(name[int(i)] for i in targets) == "<X> for inviting <Y> last <Z>"


def test_task_from_spec_on_own_files(tmp_path):
    from t5x_lite.data import TaskRegistry, make_pipeline
    from t5x_lite.data.sources import in_validation
    docs = [f"line {i} about the quick brown fox number {i * 7}" for i in range(400)]
    (tmp_path / "a.txt").write_text("\n".join(docs[:200]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"body": d}) for d in docs[200:]) + "\n")
    text_spec = f"text:{tmp_path}/*.txt;objective=prefix_lm"
    jsonl_spec = f"jsonl:{tmp_path}/*.jsonl;field=body;objective=full_lm;vocab=builtin"
    try:
        p = make_pipeline(text_spec, split="train", feature_lengths={"inputs": 32, "targets": 32},
                          architecture="encoder_decoder", batch_size=2, seed=0, process_index=0, process_count=1)
        assert next(p)["encoder_input_tokens"].shape == (2, 32)
        task = TaskRegistry.get(text_spec)
        train, val = task.source.get("train"), task.source.get("validation")
        assert len(train) + len(val) == 200
        assert all(in_validation(val[i]["text"]) for i in range(len(val)))
        q = make_pipeline(jsonl_spec, split="train", feature_lengths={"targets": 16}, architecture="decoder_only",
                          batch_size=2, seed=0, process_index=0, process_count=1, pack=False)
        assert "brown fox" in get_vocabulary("builtin").decode(next(q)["decoder_target_tokens"][0])
        with pytest.raises(UserError, match="bad option"):
            make_pipeline(f"text:{tmp_path}/*.txt;objectiv=lm", split="train", feature_lengths={"targets": 8},
                          architecture="decoder_only", batch_size=1, seed=0, process_index=0, process_count=1)
    finally:
        TaskRegistry.remove(text_spec)
        TaskRegistry.remove(jsonl_spec)


def test_subset_source_is_a_fixed_random_subset():
    from t5x_lite.data.sources import InMemorySource, SubsetSource
    from t5x_lite.errors import UserError

    base = InMemorySource({"train": [{"text": str(i)} for i in range(100)],
                           "validation": [{"text": "v"}] * 7})
    a = SubsetSource(base, {"train": 10}, seed=3).get("train")
    b = SubsetSource(base, {"train": 10}, seed=3).get("train")
    c = SubsetSource(base, {"train": 10}, seed=4).get("train")
    ids = [int(r["text"]) for r in a]
    assert len(a) == 10 and a == b and a != c
    assert ids == sorted(set(ids)) and ids != list(range(10))   # a sorted random draw, not the head
    assert len(SubsetSource(base, {"train": 10}).get("validation")) == 7   # other splits untouched
    assert len(SubsetSource(base, {"train": 1000}).get("train")) == 100
    with pytest.raises(UserError):
        SubsetSource(base, {"train": 0})
