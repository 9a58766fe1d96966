"""The built-in pre-training tasks.

On the shipped corpus (vocabulary "builtin"): builtin_span_corruption (T5 default), builtin_iid_denoising,
builtin_prefix_lm, builtin_lm, builtin_bert_style, builtin_mass_style, builtin_drop_tokens,
builtin_deshuffle, builtin_mlm (encoder-only), plus the Table 6/7 variants builtin_iid_denoising_{10,25,50}
and builtin_span_corruption_len{2,5,10}.
T5's own names for TFDS C4 (c4/en:2.2.0, field "text", vocabulary "builtin"):
c4_v220_span_corruption, c4_v220_iid_denoising, c4_v220_prefix_lm, c4_v220_full_lm.
"""

from __future__ import annotations

from t5x_lite.data.sources import BuiltinSource, TfdsSource
from t5x_lite.data.tasks import TaskRegistry, pretraining_task
from t5x_lite.data.vocabularies import get_vocabulary

_BUILTIN_DESCRIPTIONS = {
    "span_corruption": "T5 span corruption (15%, mean span 3; inputs 512 <- 568 raw tokens, targets 114)",
    "iid_denoising": "i.i.d. denoising, 15%, each run of dropped tokens -> one sentinel (Table 5 'replace spans')",
    "prefix_lm": "prefix LM: random split point, prefix -> inputs, rest -> targets",
    "full_lm": "language modeling: targets only (decoder-only)",
    "bert_style": "BERT-style: 15% corrupted (90% mask, 10% random), target = original (Table 4)",
    "mass_style": "MASS-style: 15% masked, target = original (Table 5)",
    "drop_tokens": "drop corrupted tokens: 15% dropped from inputs, targets = dropped tokens (Table 5)",
    "deshuffle": "deshuffling: inputs = shuffled tokens, target = original (Table 4)",
    "bert_mlm": "BERT MLM for the encoder-only model (80% mask / 10% random / 10% keep on 15%)",
}


def _register_builtin() -> None:
    source = BuiltinSource()
    vocab = get_vocabulary("builtin")
    corpus = "shipped WordNet+Shakespeare corpus"
    names = {"span_corruption": "builtin_span_corruption", "iid_denoising": "builtin_iid_denoising",
             "prefix_lm": "builtin_prefix_lm", "full_lm": "builtin_lm", "bert_style": "builtin_bert_style",
             "mass_style": "builtin_mass_style", "drop_tokens": "builtin_drop_tokens",
             "deshuffle": "builtin_deshuffle", "bert_mlm": "builtin_mlm"}
    for objective, name in names.items():
        TaskRegistry.add(pretraining_task(name, source, objective, vocab,
                                          description=f"{_BUILTIN_DESCRIPTIONS[objective]}; {corpus}"))
    for rate in (10, 25, 50):   # Table 6
        TaskRegistry.add(pretraining_task(f"builtin_iid_denoising_{rate}", source, "iid_denoising", vocab,
                                          description=f"i.i.d. denoising at {rate}% corruption (Table 6); {corpus}",
                                          noise_density=rate / 100))
    for span in (2, 5, 10):     # Table 7
        TaskRegistry.add(pretraining_task(f"builtin_span_corruption_len{span}", source, "span_corruption", vocab,
                                          description=f"span corruption, mean span length {span} (Table 7); {corpus}",
                                          mean_noise_span_length=float(span)))
    c4 = TfdsSource("c4/en:2.2.0", splits=("train", "validation"))
    for objective, name in (("span_corruption", "c4_v220_span_corruption"), ("iid_denoising", "c4_v220_iid_denoising"),
                            ("prefix_lm", "c4_v220_prefix_lm"), ("full_lm", "c4_v220_full_lm")):
        TaskRegistry.add(pretraining_task(name, c4, objective, vocab,
                                          description=f"{_BUILTIN_DESCRIPTIONS[objective]}; TFDS c4/en:2.2.0 "
                                                      "(prepared locally, array_record)"))


if "builtin_span_corruption" not in TaskRegistry:
    _register_builtin()
