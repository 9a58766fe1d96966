"""A checkpoint records its vocabulary's content fingerprint; loading it with a spec that now
resolves to a different file is a clear error (not silently wrong text)."""

import shutil

import numpy as np
import pytest

from t5x_lite.data import checkpoint_vocabulary, get_vocabulary, vocabulary_fingerprint
from t5x_lite.data.vocabularies import builtin_spm_path
from t5x_lite.errors import UserError


def test_fingerprint_depends_on_file_content_and_extra_ids(tmp_path):
    copy = tmp_path / "same.model"
    shutil.copy(builtin_spm_path(), copy)
    builtin = vocabulary_fingerprint(get_vocabulary("builtin"))
    assert vocabulary_fingerprint(get_vocabulary(f"spm:{copy}")) == builtin
    assert vocabulary_fingerprint(get_vocabulary(f"spm:{copy}:50")) != builtin
    assert vocabulary_fingerprint(get_vocabulary("byte")) != builtin


def test_checkpoint_vocabulary_refuses_a_changed_file(tmp_path):
    path = tmp_path / "v.model"
    shutil.copy(builtin_spm_path(), path)
    config = {"vocabulary": f"spm:{path}",
              "vocabulary_fingerprint": vocabulary_fingerprint(get_vocabulary(f"spm:{path}"))}
    assert checkpoint_vocabulary(config).vocab_size == 8100
    assert checkpoint_vocabulary({"vocabulary": None}) is None
    # Retrain "the same" path with different content: a vocabulary from another corpus.
    import sentencepiece as spm
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefgh"), 5)) for _ in range(300)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(" ".join(words[i:i + 10]) for i in range(0, 300, 10)),
                                   model_prefix=str(tmp_path / "other"), vocab_size=60, pad_id=0, eos_id=1,
                                   unk_id=2, bos_id=-1, minloglevel=2)
    shutil.copy(tmp_path / "other.model", path)
    get_vocabulary.cache_clear()
    with pytest.raises(UserError, match="different .* vocabulary file"):
        checkpoint_vocabulary(config)
    # An explicit --vocabulary override is the user's choice and is not second-guessed.
    assert checkpoint_vocabulary(config, f"spm:{path}").vocab_size == 160
