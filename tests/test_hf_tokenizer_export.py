"""`convert t5x-to-hf` writes the tokenizer; `convert hf-to-t5x` reads it back.

Checked with the real transformers (the [hf] extra CI installs): AutoTokenizer.from_pretrained on the
export gives t5x_lite's ids for the same text (sentinels, byte-fallback characters, whitespace runs),
and T5ForConditionalGeneration + its tokenizer + greedy `generate` give what `t5x-lite infer` gives.
(The second is in tests/test_infer_outputs.py, on its checkpoint.)  The tests that do not need transformers (the files, hf-to-t5x picking up spiece.model, the byte
vocabulary warning) run without it.
"""

import json
import lzma
import os
import stat

import numpy as np
import pytest

from t5x_lite import cli
from t5x_lite.data import get_vocabulary, vocabulary_fingerprint
from t5x_lite.data import hf_tokenizer
from t5x_lite.data.vocabularies import builtin_spm_path

TEXTS = ["Hello world.", "The <extra_id_0> of the city <extra_id_1> in 1920.", "a<extra_id_0>b",
         "<extra_id_99>x", "x <extra_id_3>", " <extra_id_0>  two  spaces\tand a tab ",
         "Über naïve café — ☃ 𝄞", "ﬁ ① Ｈｅｌｌｏ", "line\nbreak", ""]
FILES = {"config.json", "generation_config.json", "model.safetensors"} | set(hf_tokenizer.TOKENIZER_FILES)


def run_cli(capsys, *args):
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _save(path, vocabulary, fingerprint=None):
    """A tiny random T5.1.1-style checkpoint (random normal params: nothing to compile)."""
    import jax

    from t5x_lite.checkpoints import save_params_checkpoint
    from t5x_lite.loading import abstract_params
    from t5x_lite.models import ModelConfig
    cfg = ModelConfig(architecture="encoder_decoder", vocab_size=8192, d_model=32, num_heads=2, d_kv=16, d_ff=64,
                      num_encoder_layers=1, num_decoder_layers=1, mlp_activations=("gelu", "linear"),
                      tie_embeddings=False).validate()
    rng = np.random.default_rng(5)
    params = jax.tree.map(lambda a: (rng.normal(size=a.shape) * (a.shape[0] ** -0.5 if len(a.shape) > 1 else 1.0)
                                     ).astype(a.dtype), abstract_params(cfg))
    if vocabulary and fingerprint is None:
        fingerprint = vocabulary_fingerprint(get_vocabulary(vocabulary))
    save_params_checkpoint(path, params, {"model": cfg.to_dict(), "vocabulary": vocabulary,
                                          "vocabulary_fingerprint": fingerprint})


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny random T5.1.1 checkpoint with the shipped vocabulary, and its HF export."""
    root = tmp_path_factory.mktemp("hftok")
    ckpt, hf_dir = str(root / "ckpt"), str(root / "hf")
    _save(ckpt, "builtin")
    assert cli.main(["convert", "t5x-to-hf", "--input", ckpt, "--output", hf_dir, "--no-progress"]) == 0
    return root, ckpt, hf_dir


def test_export_writes_the_tokenizer_files(export):
    _, _, hf_dir = export
    assert set(os.listdir(hf_dir)) == FILES              # nothing temporary left
    with open(os.path.join(hf_dir, "spiece.model"), "rb") as a, open(builtin_spm_path(), "rb") as b:
        assert a.read() == b.read()
    umask = os.umask(0)
    os.umask(umask)
    for name in hf_tokenizer.TOKENIZER_FILES:           # written like the model files: the user's umask
        assert stat.S_IMODE(os.stat(os.path.join(hf_dir, name)).st_mode) == 0o666 & ~umask, name
    cfg = json.load(open(os.path.join(hf_dir, "tokenizer_config.json")))
    vocab = get_vocabulary("builtin")
    assert (cfg["eos_token"], cfg["unk_token"], cfg["pad_token"], cfg["extra_ids"]) == ("</s>", "<unk>", "<pad>", 100)
    assert cfg["additional_special_tokens"] == [f"<extra_id_{k}>" for k in range(100)]
    assert cfg["added_tokens_decoder"][str(vocab.sentinel_id(0))]["content"] == "<extra_id_0>"
    assert cfg["added_tokens_decoder"]["8000"]["content"] == "<extra_id_99>"
    # the shipped vocabulary has byte fallback, which transformers' T5Tokenizer drops: the generic class
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    special = json.load(open(os.path.join(hf_dir, "special_tokens_map.json")))
    assert special["eos_token"] == "</s>" and len(special["additional_special_tokens"]) == 100
    backend = json.load(open(os.path.join(hf_dir, "tokenizer.json")))
    assert backend["model"]["type"] == "Unigram" and backend["model"]["byte_fallback"] is True
    assert len(backend["model"]["vocab"]) == vocab.vocab_size == 8100


def test_auto_tokenizer_gives_t5x_lite_ids(export):
    transformers = pytest.importorskip("transformers")
    _, _, hf_dir = export
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    vocab = get_vocabulary("builtin")
    assert len(tok) == vocab.vocab_size == 8100
    got = {t: tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS}
    assert got == {t: vocab.encode(t) for t in TEXTS}
    assert got["a<extra_id_0>b"][1] == vocab.sentinel_id(0) == 8099
    assert any(2 < i < 259 for i in got["Über naïve café — ☃ 𝄞"])    # byte-fallback pieces, not <unk>
    assert tok("Hello world.")["input_ids"] == vocab.encode("Hello world.") + [1]   # EOS appended, as T5 tasks
    assert (tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (1, 0, 2)
    ids = vocab.encode("The <extra_id_0> of the city ☃")
    assert tok.decode(ids) == vocab.decode(ids)
    # 300 real lines of the shipped corpus, a sentinel put in every third one
    with lzma.open(os.path.join(os.path.dirname(builtin_spm_path()), "validation.txt.xz"), "rt") as f:
        lines = [line.rstrip("\n") for _, line in zip(range(300), f)]
    lines = [line.replace(" ", f" <extra_id_{k % 100}> ", 1) if k % 3 == 0 else line for k, line in enumerate(lines)]
    assert [tok(t, add_special_tokens=False)["input_ids"] for t in lines] == [vocab.encode(t) for t in lines]


def test_unigram_without_byte_fallback_is_a_t5_tokenizer(tmp_path, capsys):
    """Google's T5 kind of model (unigram, no byte fallback) is declared T5Tokenizer, which loads from
    tokenizer.json or, as in transformers 4, from spiece.model alone; 10 extra ids."""
    transformers = pytest.importorskip("transformers")
    from t5x_lite.data.cli import train_vocabulary
    with lzma.open(os.path.join(os.path.dirname(builtin_spm_path()), "validation.txt.xz"), "rt") as f:
        (tmp_path / "text.txt").write_text("".join(line for _, line in zip(range(800), f)))
    train_vocabulary([str(tmp_path / "text.txt")], 300, "unigram", str(tmp_path / "uni"), byte_fallback=False)
    vocab = get_vocabulary(f"spm:{tmp_path / 'uni.model'}:10")
    texts = [t.replace("99", "9") for t in TEXTS]
    for drop in ((), ("tokenizer.json",)):
        out = tmp_path / f"tok{len(drop)}"
        out.mkdir()
        for name, data in hf_tokenizer.tokenizer_files(vocab).items():
            if name not in drop:
                (out / name).write_bytes(data)
        tok = transformers.AutoTokenizer.from_pretrained(str(out))
        assert type(tok).__name__ == "T5Tokenizer" and len(tok) == 310
        assert [tok(t, add_special_tokens=False)["input_ids"] for t in texts] == [vocab.encode(t) for t in texts]
        assert tok("<extra_id_0>", add_special_tokens=False)["input_ids"] == [309]


def test_hf_to_t5x_picks_up_spiece_model(export, tmp_path, capsys):
    """hf-to-t5x copies HF_DIR/spiece.model into the checkpoint and records it (with extra_ids from
    tokenizer_config.json) as the checkpoint's vocabulary: same fingerprint as the original."""
    from t5x_lite.checkpoints import read_config
    _, ckpt, hf_dir = export
    back = str(tmp_path / "back")
    code, _, err = run_cli(capsys, "convert", "hf-to-t5x", "--input", hf_dir, "--output", back, "--no-progress")
    assert code == 0, err
    config = read_config(back)
    assert config["vocabulary"] == f"spm:{os.path.join(os.path.abspath(back), 'spiece.model')}:100"
    assert config["vocabulary_fingerprint"] == read_config(ckpt)["vocabulary_fingerprint"]
    assert sorted(os.listdir(back)) == ["0", "spiece.model"]
    assert get_vocabulary(config["vocabulary"]).encode(TEXTS[1]) == get_vocabulary("builtin").encode(TEXTS[1])
    # --overwrite replaces such a checkpoint (spiece.model included); an explicit --vocabulary wins
    code, _, err = run_cli(capsys, "convert", "hf-to-t5x", "--input", hf_dir, "--output", back, "--overwrite",
                           "--vocabulary", "byte")
    assert code == 0, err
    assert read_config(back)["vocabulary"] == "byte" and sorted(os.listdir(back)) == ["0"]
    # and back to HF again: the tokenizer of the re-imported checkpoint is the same bytes
    code, _, err = run_cli(capsys, "convert", "hf-to-t5x", "--input", hf_dir, "--output", back, "--overwrite")
    assert code == 0, err
    again = str(tmp_path / "again")
    assert run_cli(capsys, "convert", "t5x-to-hf", "--input", back, "--output", again)[0] == 0
    for name in hf_tokenizer.TOKENIZER_FILES:
        assert (tmp_path / "again" / name).read_bytes() == open(os.path.join(hf_dir, name), "rb").read(), name


def test_hf_to_t5x_refuses_other_sentinel_ids(export, tmp_path, capsys):
    import shutil
    _, _, hf_dir = export
    moved = tmp_path / "moved"
    shutil.copytree(hf_dir, moved)
    cfg = json.loads((moved / "tokenizer_config.json").read_text())
    cfg["added_tokens_decoder"]["8000"]["content"] = "<extra_id_0>"
    del cfg["added_tokens_decoder"]["8099"]
    (moved / "tokenizer_config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(capsys, "convert", "hf-to-t5x", "--input", str(moved), "--output", str(tmp_path / "c"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "<extra_id_0> is id 8000" in err and "at 8099" in err
    assert not (tmp_path / "c").exists()


def test_byte_vocabulary_warns_and_exports_the_model(export, tmp_path, capsys):
    """No SentencePiece model: one warning line, the model files, and no stale tokenizer files left by
    an earlier export in the same directory (--overwrite)."""
    import shutil
    _, _, hf_dir = export
    ckpt, out = str(tmp_path / "byte"), tmp_path / "hf"
    _save(ckpt, "byte")
    shutil.copytree(hf_dir, out)
    code, _, err = run_cli(capsys, "convert", "t5x-to-hf", "--input", ckpt, "--output", str(out), "--overwrite")
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: its vocabulary ByteVocabulary(extra_ids=100) is not "
                                                   "a SentencePiece model: no tokenizer files written"), err
    assert set(os.listdir(out)) == {"config.json", "generation_config.json", "model.safetensors"}


def test_a_vocabulary_that_cannot_be_read_is_refused(export, tmp_path, capsys):
    """Exporting the wrong tokenizer is worse than none: a missing .model file or one whose content
    changed under the checkpoint is one error line (--vocabulary is the way out), and nothing is written."""
    _, ckpt, _ = export
    code, _, err = run_cli(capsys, "convert", "t5x-to-hf", "--input", ckpt, "--output", str(tmp_path / "a"),
                           "--vocabulary", "spm:/nonexistent/spiece.model")
    assert code == 2 and "cannot export the tokenizer: SentencePiece model not found: /nonexistent/spiece.model" in err
    changed = str(tmp_path / "changed")
    _save(changed, "builtin", fingerprint="0123456789abcdef")
    code, _, err = run_cli(capsys, "convert", "t5x-to-hf", "--input", changed, "--output", str(tmp_path / "b"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cannot export the tokenizer: the checkpoint was trained with a different 'builtin' vocabulary" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert run_cli(capsys, "convert", "t5x-to-hf", "--input", changed, "--output", str(tmp_path / "b"),
                   "--vocabulary", "builtin")[0] == 0
    assert (tmp_path / "b" / "tokenizer.json").exists()
