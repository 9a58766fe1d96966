"""The shipped `builtin` vocabulary has SentencePiece byte fallback: any text round-trips exactly.

Without it, German/French/Romanian letters, typographic quotes and even "+" became <unk> (id 2), so a model
fine-tuned on the local translation tasks could never produce the reference text.
"""

import pytest

from t5x_lite.data import get_vocabulary
from t5x_lite.data.cli import vocab_main
from t5x_lite.errors import UserError

TEXTS = ["Größe ändern", "Fenêtre", "Închide fereastra", "\u201cquoted\u201d C++", "ß ø ș ț ă € 日本 🙂",
         "Ünïcödé at the start", "tab\tand  double  spaces?"]


@pytest.fixture(scope="module")
def vocab():
    return get_vocabulary("builtin")


def test_builtin_has_256_byte_pieces(vocab):
    sp = vocab._sp
    byte_ids = [i for i in range(sp.GetPieceSize()) if sp.IsByte(i)]
    assert len(byte_ids) == 256 and vocab.base_vocab_size == 8000 and vocab.vocab_size == 8100
    assert [sp.IdToPiece(i) for i in byte_ids] == [f"<0x{b:02X}>" for b in range(256)]
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_without_unk(vocab, text):
    ids = vocab.encode(text)
    assert vocab.unk_id not in ids
    # SentencePiece's normalizer (nmt_nfkc) collapses whitespace runs; everything else is exact.
    expected = " ".join(text.split()) if "\t" in text else text
    assert vocab.decode(ids) == expected
    assert vocab.decode(ids + [1] + vocab.encode("after eos")) == expected   # EOS still stops decoding


def test_byte_pieces_next_to_sentinels_padding_and_batches(vocab):
    # (a space just before a sentinel is not kept by SentencePiece, with or without byte fallback)
    ids = vocab.encode("Größe<extra_id_0> ändern<extra_id_1>")
    assert ids.count(vocab.sentinel_id(0)) == 1 and ids.count(vocab.sentinel_id(1)) == 1
    assert vocab.unk_id not in ids and any(vocab._sp.IsByte(i) for i in ids)
    assert vocab.decode(ids) == "Größe<extra_id_0> ändern<extra_id_1>"
    assert vocab.decode([0] + vocab.encode("Fenêtre") + [0, 0, 8050]) == "Fenêtre<extra_id_49>"
    assert vocab.decode(vocab.encode("ä") + [8100, 9000]) == "ä"   # ids >= vocab_size dropped
    assert vocab.decode_batch(vocab.encode_batch(TEXTS[:4])) == TEXTS[:4]


def test_vocab_train_byte_fallback_flag(tmp_path):
    import sentencepiece as spm
    corpus = tmp_path / "c.txt"
    from t5x_lite.data import BuiltinSource
    docs = BuiltinSource().get("validation")
    corpus.write_text("\n".join(docs[i]["text"] for i in range(600)) + "\n")
    prefix = str(tmp_path / "bf")
    assert vocab_main(["train", "--input", str(corpus), "--vocab-size", "400", "--out", prefix]) == 0
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    assert sp.get_piece_size() == 400 and sum(sp.IsByte(i) for i in range(400)) == 256
    v = get_vocabulary(f"spm:{prefix}.model")
    assert v.unk_id not in v.encode("Größe") and v.decode(v.encode("Größe")) == "Größe"
    assert vocab_main(["train", "--input", str(corpus), "--vocab-size", "250", "--no-byte-fallback",
                       "--out", prefix + "_nobf"]) == 0
    v = get_vocabulary(f"spm:{prefix}_nobf.model")
    assert v.unk_id in v.encode("Größe")
    with pytest.raises(UserError, match="too small for --byte-fallback"):
        vocab_main(["train", "--input", str(corpus), "--vocab-size", "100", "--out", prefix + "_small"])
