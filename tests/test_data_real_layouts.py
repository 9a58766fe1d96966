"""T5's task names on real dataset files, read without TensorFlow, from small files written here in the
real layouts under one TFDS data dir (make_pipeline's data_dir / `data inspect --data-dir`, else
$TFDS_DATA_DIR):

  c4/en/c4-train.NNNNN-of-01024.json.gz, c4-validation.NNNNN-of-00008.json.gz    (allenai/c4)
  glue/<config>/<split>-00000-of-00001.parquet                                  (nyu-mll/glue)
  super_glue/<config>/<split>-00000-of-00001.parquet                            (aps/super_glue)
  super_glue/<config>/<split>/0000.parquet                                      (refs/convert/parquet)

and T5's SentencePiece model through $T5X_LITE_T5_VOCAB.  TFDS array_record keeps working
(tests/test_data_tfds_c4.py, tests/test_tasks_t5_formats.py)."""

import gzip
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import t5x_lite.tasks  # noqa: F401  (registers T5's task names)
from t5x_lite.data import TaskRegistry, get_vocabulary, make_pipeline
from t5x_lite.data.sources import TfdsSource
from t5x_lite.data.vocabularies import builtin_spm_path
from t5x_lite.errors import UserError

DOCS = [f"c4 document {i}: " + " ".join(["the quick brown fox jumps over the lazy dog"] * (1 + i % 3))
        for i in range(40)]


def _c4_shard(path, docs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"text": d, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://x.org/{i}"}) + "\n")


@pytest.fixture
def c4_dir(tmp_path):
    en = tmp_path / "c4" / "en"
    _c4_shard(str(en / "c4-train.00000-of-01024.json.gz"), DOCS[:15])
    _c4_shard(str(en / "c4-train.00001-of-01024.json.gz"), DOCS[15:30])
    _c4_shard(str(en / "c4-validation.00000-of-00008.json.gz"), DOCS[30:])
    return str(tmp_path)


@pytest.fixture
def no_tfds(monkeypatch):
    """Reading the file layouts must not fall back to TFDS."""
    def refuse(self, split):
        raise AssertionError(f"TFDS read for {self.name} {split}")
    monkeypatch.setattr(TfdsSource, "_load", refuse)


def test_c4_json_gz_every_validation_document_once_in_order(c4_dir, no_tfds):
    p = make_pipeline("c4_v220_full_lm", split="validation", feature_lengths={"targets": 32},
                      architecture="decoder_only", batch_size=1, seed=0, shuffle=False, pack=False, num_epochs=1,
                      process_index=0, process_count=1, data_dir=c4_dir)
    vocab = get_vocabulary("builtin")
    tokens = np.concatenate([b["decoder_target_tokens"][0][b["decoder_segment_ids"][0] > 0] for b in p])
    assert tokens.tolist() == [t for d in DOCS[30:] for t in vocab.encode(d) + [1]]
    source = TaskRegistry.get("c4_v220_full_lm").source.with_data_dir(c4_dir)
    assert len(source.get("train")) == 30 and source.get("train")[15] == {"text": DOCS[15]}   # both shards, in order


def test_c4_found_through_tfds_data_dir_env(c4_dir, no_tfds, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", c4_dir)
    kw = dict(split="train", feature_lengths={"inputs": 32, "targets": 8}, architecture="encoder_decoder",
              batch_size=2, seed=0, process_index=0, process_count=1)
    batches = [next(make_pipeline("c4_v220_span_corruption", **kw)) for _ in range(2)]
    assert np.array_equal(batches[0]["encoder_input_tokens"], batches[1]["encoder_input_tokens"])
    text = get_vocabulary("builtin").decode(batches[0]["encoder_input_tokens"][0])
    assert "quick" in text or "fox" in text or "c4" in text


def test_c4_lfs_pointer_and_missing_split_are_one_line(tmp_path):
    en = tmp_path / "c4" / "en"
    en.mkdir(parents=True)
    (en / "c4-validation.00000-of-00008.json.gz").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 40000000\n")
    source = TaskRegistry.get("c4_v220_span_corruption").source.with_data_dir(str(tmp_path))
    with pytest.raises(UserError, match="c4-validation.00000-of-00008.json.gz.*Git LFS pointer.*git lfs pull"):
        source.get("validation")
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(UserError, match=r"cannot open TFDS dataset c4/en:2.2.0 split train.*nor files in "
                                        r".*c4/en \(c4-train.00000-of-01024.json.gz") as e:
        source.get("train")
    assert "\n" not in str(e.value)


def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


WSC = "The city councilmen refused the demonstrators a permit because they feared violence."

# task, file under the data dir (HF layout), rows with HF's feature names, split read, inputs, targets,
# postprocessed target (the same strings as tests/test_tasks_t5_formats.py gets from TFDS)
CASES = [
    ("glue_cola_v002", "glue/cola/validation-00000-of-00001.parquet",
     [{"sentence": "Ate John the.", "label": 0, "idx": 1}], "validation",
     "cola sentence: Ate John the.", "unacceptable", 0),
    ("glue_mnli_v002", "glue/mnli/validation_matched-00000-of-00001.parquet",
     [{"premise": "A man is sleeping.", "hypothesis": "A man sleeps.", "label": 0, "idx": 0}], "validation",
     "mnli hypothesis: A man sleeps. premise: A man is sleeping.", "entailment", 0),
    ("glue_mnli_v002", "glue/mnli/validation_mismatched-00000-of-00001.parquet",
     [{"premise": "x", "hypothesis": "y", "label": 2, "idx": 0}], "validation_mismatched",
     "mnli hypothesis: y premise: x", "contradiction", 2),
    ("glue_stsb_v002", "glue/stsb/validation-00000-of-00001.parquet",
     [{"sentence1": "A cat.", "sentence2": "A kitten.", "label": 3.77, "idx": 0}], "validation",
     "stsb sentence1: A cat. sentence2: A kitten.", "3.8", 3.8),
    ("glue_qqp_v002", "glue/qqp/test-00000-of-00001.parquet",       # HF test labels are -1
     [{"question1": "Why?", "question2": "How?", "label": -1, "idx": 7}], "test",
     "qqp question1: Why? question2: How?", "<unk>", -1),
    ("super_glue_boolq_v102", "super_glue/boolq/validation/0000.parquet",     # refs/convert/parquet layout
     [{"question": "is water wet", "passage": "Water is wet.", "idx": 0, "label": 1}], "validation",
     "boolq passage: Water is wet. question: is water wet", "True", 1),
    ("super_glue_multirc_v102", "super_glue/multirc/validation-00000-of-00001.parquet",
     [{"paragraph": "Sent 1: <b>Hi</b> there.<br>Sent 2: Bye.", "question": "What?", "answer": "Hi",
       "idx": {"paragraph": 3, "question": 4, "answer": 5}, "label": 1}], "validation",
     "multirc question: What? answer: Hi paragraph: Sent 1: Hi there. Sent 2: Bye.", "True",
     {"group": (3, 4), "value": 1}),
    ("super_glue_record_v102", "super_glue/record/validation-00000-of-00001.parquet",
     [{"passage": "The cat sat.\n@highlight\nIt was happy", "query": "@placeholder sat",
       "entities": ["cat", "mat", "cat"], "entity_spans": {"text": ["cat"], "start": [4], "end": [7]},
       "answers": ["cat", "the cat"], "idx": {"passage": 0, "query": 1}}], "validation",
     "record query: @placeholder sat entities: cat, mat passage: The cat sat. It was happy", "cat",
     ["cat", "the cat"]),
    ("super_glue_wsc_v102_simple_eval", "super_glue/wsc.fixed/validation-00000-of-00001.parquet",
     [{"text": WSC, "span1_index": 0, "span2_index": 9, "span1_text": "The city councilmen", "span2_text": "they",
       "idx": 0, "label": 1}], "validation",
     "wsc: The city councilmen refused the demonstrators a permit because * they * feared violence.",
     "The city councilmen", 1),
    ("squad_v010_allanswers", "squad/plain_text/validation-00000-of-00001.parquet",
     [{"id": "1", "title": "Football", "context": "Denver Broncos won (again).", "question": "Who won?",
       "answers": {"text": ["Denver Broncos", "Broncos"], "answer_start": [0, 7]}}], "validation",
     "question: Who won ? context: Denver Broncos won ( again ) .", "Denver Broncos", ["Denver Broncos", "Broncos"]),
]


def test_glue_superglue_parquet_give_the_tfds_formats(tmp_path, no_tfds):
    for name, rel, rows, split, want_inputs, want_targets, want_post in CASES:
        _parquet(str(tmp_path / rel), rows)
        task = TaskRegistry.get(name).with_data_dir(str(tmp_path))
        ex = next(iter(task.get_examples(split)))
        assert (ex["inputs_pretokenized"], ex["targets_pretokenized"]) == (want_inputs, want_targets), name
        post = task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True)
        assert (post if not isinstance(post, float) else round(post, 1)) == want_post, name
        vocab = task.vocabulary
        assert vocab.decode(ex["inputs"]) == vocab.decode(vocab.encode(want_inputs)) and ex["inputs"][-1] == 1


def test_glue_parquet_through_tfds_data_dir_env_and_pipeline(tmp_path, no_tfds, monkeypatch):
    rows = [{"sentence": f"Sentence number {i} is fine.", "label": i % 2, "idx": i} for i in range(12)]
    _parquet(str(tmp_path / "glue/sst2/train-00000-of-00001.parquet"), rows)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    p = make_pipeline("glue_sst2_v002", split="train", feature_lengths={"inputs": 16, "targets": 4},
                      architecture="encoder_decoder", batch_size=4, seed=0, shuffle=False, pack=False,
                      process_index=0, process_count=1)
    batch = next(p)
    vocab = get_vocabulary("builtin")
    assert [vocab.decode(r) for r in batch["decoder_target_tokens"]] == ["negative", "positive"] * 2
    assert vocab.decode(batch["encoder_input_tokens"][1]).startswith("sst2 sentence: Sentence number 1")


def test_t5_vocab_env_reaches_the_t5_task_names(tmp_path):
    spm = tmp_path / "spiece.model"
    shutil.copy(builtin_spm_path(), spm)      # stands in for T5's cc_all.32000.100extra spiece.model
    code = ("import t5x_lite.tasks; from t5x_lite.data import TaskRegistry as R\n"
            "print([getattr(R.get(n).vocabulary, 'model_file', None) for n in "
            "('c4_v220_span_corruption', 'glue_cola_v002', 'super_glue_rte_v102', 'builtin_span_corruption')])")
    env = {**os.environ, "T5X_LITE_T5_VOCAB": str(spm)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert eval(out) == [str(spm)] * 3 + [builtin_spm_path()]
    env["T5X_LITE_T5_VOCAB"] = str(tmp_path / "missing.model")
    r = subprocess.run([sys.executable, "-m", "t5x_lite.cli", "data", "list"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "$T5X_LITE_T5_VOCAB=" in r.stderr and "SentencePiece model not found" in r.stderr
