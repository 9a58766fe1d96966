"""T5's c4_v220_* task names on a tiny TFDS dataset built here with the same name/version/feature spec as
c4/en:2.2.0 (text, url, timestamp) in array_record format, read back without TensorFlow."""

import json

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import t5x_lite.tasks  # noqa: E402,F401  (registers the c4_v220_* tasks)
from t5x_lite.data import TaskRegistry, get_vocabulary, make_pipeline  # noqa: E402
from t5x_lite.errors import UserError  # noqa: E402

TEXTS = [f"document {i}: " + " ".join(["the quick brown fox jumps over the lazy dog"] * (1 + i % 4)) for i in range(30)]


@pytest.fixture(scope="module")
def c4_dir(tmp_path_factory):
    from tensorflow_datasets.core import registered
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    with registered.skip_registration():
        class C4(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("2.2.0")
            BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="en", version="2.2.0")]

            def _info(self):
                return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                    {"text": tfds.features.Text(), "url": tfds.features.Text(), "timestamp": tfds.features.Text()}))

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples(0, 24), "validation": self._generate_examples(24, 30)}

            def _generate_examples(self, lo, hi):
                for i in range(lo, hi):
                    yield i, {"text": TEXTS[i], "url": f"https://example.com/{i}", "timestamp": "2019-04-01"}

    C4(config="en", data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


@pytest.mark.parametrize("name,arch,lengths", [
    ("c4_v220_span_corruption", "encoder_decoder", {"inputs": 64, "targets": 16}),
    ("c4_v220_iid_denoising", "encoder_decoder", {"inputs": 64, "targets": 32}),
    ("c4_v220_prefix_lm", "decoder_only", {"inputs": 32, "targets": 32}),
    ("c4_v220_full_lm", "decoder_only", {"targets": 48}),
])
def test_c4_tasks_on_local_tfds(c4_dir, name, arch, lengths):
    kw = dict(split="validation", feature_lengths=lengths, architecture=arch, batch_size=2, seed=0,
              process_index=0, process_count=1, data_dir=c4_dir)
    p = make_pipeline(name, **kw)
    batches = [next(p) for _ in range(4)]
    vocab = get_vocabulary("builtin")
    key = "decoder_target_tokens"
    text = " ".join(vocab.decode(r[r > 0]) for b in batches for r in b[key])
    assert "quick" in text or "<extra_id_0>" in text
    # deterministic and resumable like any other task
    q = make_pipeline(name, **kw)
    next(q)
    r = make_pipeline(name, **kw)
    r.set_state(json.loads(json.dumps(q.get_state())))
    for want in batches[1:]:
        got = next(r)
        assert all(np.array_equal(got[k], want[k]) for k in want)


def test_c4_full_lm_reads_every_document_once(c4_dir):
    """One epoch of the validation split (6 docs) yields exactly their tokens, each document once and
    ended by EOS (TFDS stores records in its own shuffled order, so compare as a multiset)."""
    p = make_pipeline("c4_v220_full_lm", split="validation", feature_lengths={"targets": 32},
                      architecture="decoder_only", batch_size=1, seed=0, shuffle=False, pack=False, num_epochs=1,
                      process_index=0, process_count=1, data_dir=c4_dir)
    vocab = get_vocabulary("builtin")
    tokens = np.concatenate([b["decoder_target_tokens"][0][b["decoder_segment_ids"][0] > 0] for b in p])
    docs = [tuple(d) for d in np.split(tokens, np.flatnonzero(tokens == 1) + 1) if len(d)]
    assert sorted(docs) == sorted(tuple(vocab.encode(t) + [1]) for t in TEXTS[24:30])


def test_c4_without_prepared_data_is_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot open TFDS dataset c4/en:2.2.0"):
        make_pipeline("c4_v220_span_corruption", split="train", feature_lengths={"inputs": 64, "targets": 16},
                      architecture="encoder_decoder", batch_size=2, seed=0, process_index=0, process_count=1,
                      data_dir=str(tmp_path))
    assert "c4_v220_span_corruption" in TaskRegistry.names()
