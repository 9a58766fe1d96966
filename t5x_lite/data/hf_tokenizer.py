"""Hugging Face tokenizer files for a t5x_lite SentencePiece vocabulary (and back).

`convert t5x-to-hf` writes them beside the model so that `AutoTokenizer.from_pretrained(HF_DIR)`
gives the ids t5x_lite gives for the same text, sentinels included; `convert hf-to-t5x` reads
`spiece.model` (and the number of extra ids) from an HF directory.  Needs neither transformers nor
tokenizers: the files are plain JSON (and a copy of the .model file).

    spiece.model             the SentencePiece model, byte for byte (T5Tokenizer's file name)
    tokenizer.json           the `tokenizers` serialization: a Unigram (or BPE) model with the piece
                             scores, SentencePiece's normalizer spec as tokenizers normalizers (the
                             same chain transformers builds from a .model file), byte fallback when the
                             model has it, and the sentinels as special added tokens
    tokenizer_config.json    T5 conventions: eos </s>, unk <unk>, pad <pad>, extra_ids N,
                             additional_special_tokens <extra_id_0>..<extra_id_{N-1}>, their ids
    special_tokens_map.json  the same special tokens

Ids follow t5x_lite (and T5): pieces 0..P-1 are the SentencePiece pieces (pad 0, eos 1, unk 2), then
<extra_id_k> = P + N - 1 - k (sentinel 0 is the last id).

tokenizer_class is "T5Tokenizer" when transformers' T5Tokenizer reproduces the model (a unigram
model without byte fallback, e.g. Google's T5 spiece.model): T5Tokenizer rebuilds its backend with
byte_fallback=False and a whitespace split of its own, so for any other model (byte fallback, as the
shipped vocabulary has, or BPE) the class is "PreTrainedTokenizerFast", which loads tokenizer.json as
it is.
"""

from __future__ import annotations

import base64
import json
import os

from t5x_lite.data.vocabularies import DEFAULT_EXTRA_IDS, SentencePieceVocabulary
from t5x_lite.errors import UserError

SPIECE = "spiece.model"
TOKENIZER_FILES = (SPIECE, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_META = "\u2581"   # SentencePiece's whitespace mark
# SentencePiece ModelProto.SentencePiece.Type
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def _model_proto(model_file: str):
    from sentencepiece import sentencepiece_model_pb2   # needs protobuf (a tensorflow-datasets dependency)
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        with open(model_file, "rb") as f:
            proto.ParseFromString(f.read())
    except Exception as e:   # OSError, protobuf's DecodeError
        raise UserError(f"cannot read SentencePiece model {model_file}: {e}") from None
    return proto


def _added_token(content: str, token_id: int) -> dict:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def tokenizer_json(vocab: SentencePieceVocabulary) -> dict:
    """The `tokenizers` serialization of `vocab` (see the module docstring)."""
    proto = _model_proto(vocab.model_file)
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    pieces = [(p.piece, float(p.score)) for p in proto.pieces]
    sentinels = [(f"<extra_id_{k}>", vocab.sentinel_id(k)) for k in range(vocab.extra_ids)]
    full = pieces + [(name, 0.0) for name, _ in sorted(sentinels, key=lambda s: s[1])]
    byte_fallback = bool(spec.byte_fallback)
    if spec.model_type == 1:       # UNIGRAM
        model = {"type": "Unigram", "unk_id": int(spec.unk_id), "vocab": [[p, s] for p, s in full],
                 "byte_fallback": byte_fallback}
    elif spec.model_type == 2:     # BPE: merges ranked by piece score, as transformers derives them
        normal = {p.piece: (p.score, i) for i, p in enumerate(proto.pieces) if p.type == _NORMAL}
        ranked = sorted((-score, i, piece[:cut], piece[cut:]) for piece, (score, i) in normal.items()
                        for cut in range(1, len(piece)) if piece[:cut] in normal and piece[cut:] in normal)
        model = {"type": "BPE", "dropout": None, "unk_token": spec.unk_piece, "continuing_subword_prefix": None,
                 "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": byte_fallback,
                 "ignore_merges": any(p.type == _USER_DEFINED for p in proto.pieces),
                 "vocab": {p: i for i, (p, _) in enumerate(full)},
                 "merges": [[left, right] for _, _, left, right in ranked]}
    else:
        raise UserError(f"{vocab.model_file}: SentencePiece model type {spec.model_type} (not unigram or BPE) has "
                        "no Hugging Face tokenizer equivalent")
    # SentencePiece's normalizer, in its order (transformers' build_tokenizer_from_spm_proto, legacy=True:
    # every chunk between special tokens gets the dummy prefix, as t5x_lite encodes around sentinels).
    normalizers = []
    if norm.precompiled_charsmap:
        normalizers.append({"type": "Precompiled",
                            "precompiled_charsmap": base64.b64encode(norm.precompiled_charsmap).decode()})
    if norm.remove_extra_whitespaces:
        normalizers += [{"type": "Replace", "pattern": {"Regex": r"\A +| +\z"}, "content": ""},
                        {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]
    if norm.escape_whitespaces:
        normalizers.append({"type": "Replace", "pattern": {"String": " "}, "content": _META})
    if norm.add_dummy_prefix:    # Metaspace skips the prefix when the text starts with the mark; SentencePiece doesn't
        normalizers.append({"type": "Replace", "pattern": {"Regex": "\\A" + _META}, "content": _META * 2})
    pre = []
    if norm.add_dummy_prefix:
        pre.append({"type": "Metaspace", "replacement": _META, "prepend_scheme": "always", "split": False})
    user_defined = sorted((p.piece for p in proto.pieces if p.type == _USER_DEFINED), key=len, reverse=True)
    if user_defined:             # emitted whole, never merged
        import re
        pre.append({"type": "Split", "pattern": {"Regex": "|".join(re.escape(p) for p in user_defined)},
                    "behavior": "Isolated", "invert": False})
    decoders = [{"type": "Replace", "pattern": {"String": _META}, "content": " "}]
    if byte_fallback:
        decoders.append({"type": "ByteFallback"})
    if norm.add_dummy_prefix:
        decoders += [{"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]
    elif byte_fallback:
        decoders.append({"type": "Fuse"})
    eos = spec.eos_piece or "</s>"
    specials = [(p.piece, i) for i, p in enumerate(proto.pieces) if p.type in (_CONTROL, _UNKNOWN)]
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [_added_token(p, i) for p, i in specials + sorted(sentinels, key=lambda s: s[1])],
        "normalizer": {"type": "Sequence", "normalizers": normalizers} if normalizers else None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre} if pre else None,
        # T5: tokenizer(text) appends </s> (id 1), as T5 tasks append EOS to their inputs.
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": eos, "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}}],
                           "special_tokens": {eos: {"id": eos, "ids": [int(spec.eos_id)], "tokens": [eos]}}},
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": model,
    }


def tokenizer_class(vocab: SentencePieceVocabulary) -> str:
    """"T5Tokenizer" where transformers' T5Tokenizer encodes like the model, else "PreTrainedTokenizerFast"."""
    spec = _model_proto(vocab.model_file).trainer_spec
    return "T5Tokenizer" if spec.model_type == 1 and not spec.byte_fallback else "PreTrainedTokenizerFast"


def tokenizer_files(vocab) -> dict[str, bytes]:
    """{file name: bytes} of the four tokenizer files for a SentencePieceVocabulary.  Another kind of
    vocabulary (bytes) raises UserError: say so and export the model without them."""
    if not isinstance(vocab, SentencePieceVocabulary):
        raise UserError(f"the vocabulary {vocab!r} is not a SentencePiece model; no tokenizer files written")
    specials = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    sentinels = [f"<extra_id_{k}>" for k in range(vocab.extra_ids)]
    backend = tokenizer_json(vocab)
    decoder = {str(tok["id"]): {k: v for k, v in tok.items() if k != "id"} for tok in backend["added_tokens"]}
    config = {"tokenizer_class": tokenizer_class(vocab), **specials, "extra_ids": vocab.extra_ids,
              "additional_special_tokens": sentinels, "added_tokens_decoder": decoder,
              "legacy": True, "clean_up_tokenization_spaces": False}
    with open(vocab.model_file, "rb") as f:
        spiece = f.read()

    def dump(obj) -> bytes:
        return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()

    return {SPIECE: spiece,
            "tokenizer.json": (json.dumps(backend, ensure_ascii=False) + "\n").encode(),
            "tokenizer_config.json": dump(config),
            "special_tokens_map.json": dump({**specials, "additional_special_tokens": sentinels})}


def extra_ids_of_hf_dir(hf_dir: str) -> int:
    """The number of sentinel ids an HF tokenizer directory declares: tokenizer_config.json's
    extra_ids, else the <extra_id_k> tokens it lists, else T5's 100."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = os.path.join(hf_dir, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot parse {path}: {e}") from None
        if not isinstance(cfg, dict):
            raise UserError(f"{path} is not a JSON object")
        if isinstance(cfg.get("extra_ids"), int) and not isinstance(cfg["extra_ids"], bool) and cfg["extra_ids"] > 0:
            return int(cfg["extra_ids"])
        listed = {str(t.get("content") if isinstance(t, dict) else t) for t in cfg.get("additional_special_tokens") or []}
        listed |= {str(t.get("content")) for t in (cfg.get("added_tokens_decoder") or {}).values() if isinstance(t, dict)}
        count = sum(1 for t in listed if t.startswith("<extra_id_") and t.endswith(">"))
        if count:
            return count
    return DEFAULT_EXTRA_IDS


def check_sentinel_ids(hf_dir: str, vocab: SentencePieceVocabulary) -> None:
    """tokenizer_config.json's added_tokens_decoder, when it names sentinels, must put <extra_id_k> where
    t5x_lite does (vocab_size - 1 - k); a tokenizer with another layout is refused in one line."""
    path = os.path.join(hf_dir, "tokenizer_config.json")
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        decoder = (json.load(f) or {}).get("added_tokens_decoder") or {}
    for token_id, tok in decoder.items() if isinstance(decoder, dict) else ():
        name = tok.get("content") if isinstance(tok, dict) else None
        if isinstance(name, str) and name.startswith("<extra_id_") and name[10:-1].isdigit():
            k = int(name[10:-1])
            want = vocab.sentinel_id(k) if k < vocab.extra_ids else None
            if want is None or str(want) != str(token_id):
                raise UserError(f"{path}: {name} is id {token_id}, but with {vocab.base_vocab_size} pieces and "
                                f"{vocab.extra_ids} extra ids t5x_lite puts it at {want} (sentinel k = last id - k)")
