"""The numbers of Raffel et al. (2020), "Exploring the Limits of Transfer Learning
with a Unified Text-to-Text Transformer" (T5), Sections 3.1-3.3, as data.

Every table is a dict {(architecture, objective): {column: score}} on the paper's
seven validation columns, in the paper's order:

    GLUE   average over the GLUE subtasks (WNLI left out)
    CNNDM  ROUGE-2-F on CNN/Daily Mail
    SQuAD  exact match
    SGLUE  average over the SuperGLUE subtasks
    EnDe   BLEU, newstest2013        (SacreBLEU 1.3.0, "exp" smoothing, "intl" tokenization)
    EnFr   BLEU, newstest2014
    EnRo   BLEU, WMT16 dev

Architecture names are those of t5x_lite.models.table2_configs; objective names
are those of t5x_lite.study.studies.OBJECTIVES.  "denoising" is the baseline
objective (i.i.d. 15% corruption, each run of corrupted tokens replaced by one
sentinel), so the paper's starred row of Tables 2, 5, 6 and 7 is always
("encoder_decoder", "denoising").

The baseline was trained 10 times; BASELINE_STD is the standard deviation of
those runs, and the paper bolds every score within two of them of its column's
best.  Every other row is a single run.
"""

from __future__ import annotations

COLUMNS = ("GLUE", "CNNDM", "SQuAD", "SGLUE", "EnDe", "EnFr", "EnRo")

COLUMN_METRICS = {
    "GLUE": "mean over GLUE subtasks (WNLI excluded)",
    "CNNDM": "ROUGE-2-F",
    "SQuAD": "exact match",
    "SGLUE": "mean over SuperGLUE subtasks",
    "EnDe": "BLEU (newstest2013)",
    "EnFr": "BLEU (newstest2014)",
    "EnRo": "BLEU (WMT16 dev)",
}


def _row(*scores: float) -> dict[str, float]:
    assert len(scores) == len(COLUMNS)
    return dict(zip(COLUMNS, scores))


BASELINE_RUNS = 10
BASELINE_STD = _row(0.235, 0.065, 0.343, 0.416, 0.112, 0.090, 0.108)

BASELINE_KEY = ("encoder_decoder", "denoising")
CONTROL_KEY = ("encoder_decoder", "no_pretraining")

# Table 1: the baseline's mean over its 10 runs, and the same model fine-tuned from scratch.
BASELINE = _row(83.28, 19.24, 80.88, 71.36, 26.98, 39.82, 27.65)
NO_PRETRAINING = _row(66.22, 17.60, 50.31, 53.04, 25.86, 39.77, 24.04)
TABLE1 = {BASELINE_KEY: BASELINE, CONTROL_KEY: NO_PRETRAINING}

# Table 2: architectures x objectives (Sec. 3.2).  P = parameters of one BERT-base-sized
# stack of L layers, M = FLOPs of an L+L encoder-decoder (= an L-layer decoder-only model
# on inputs ++ targets).  The LM objective is a random-point prefix -> continuation split
# for every model that takes a prefix and a plain left-to-right LM for the language model.
TABLE2 = {
    ("encoder_decoder", "denoising"): BASELINE,
    ("enc_dec_shared", "denoising"): _row(82.81, 18.78, 80.63, 70.73, 26.72, 39.03, 27.46),
    ("enc_dec_6_layers", "denoising"): _row(80.88, 18.97, 77.59, 68.42, 26.38, 38.40, 26.95),
    ("language_model", "denoising"): _row(74.70, 17.93, 61.14, 55.02, 25.09, 35.28, 25.86),
    ("prefix_lm", "denoising"): _row(81.82, 18.61, 78.94, 68.11, 26.43, 37.98, 27.39),
    ("encoder_decoder", "lm"): _row(79.56, 18.59, 76.02, 64.29, 26.27, 39.17, 26.86),
    ("enc_dec_shared", "lm"): _row(79.60, 18.13, 76.35, 63.50, 26.62, 39.17, 27.05),
    ("enc_dec_6_layers", "lm"): _row(78.67, 18.26, 75.32, 64.06, 26.13, 38.42, 26.89),
    ("language_model", "lm"): _row(73.78, 17.54, 53.81, 56.51, 25.23, 34.31, 25.38),
    ("prefix_lm", "lm"): _row(79.68, 17.84, 76.87, 64.86, 26.28, 37.51, 26.76),
}
# The Params and Cost columns of Table 2.
TABLE2_COST = {
    "encoder_decoder": ("2P", "M"),
    "enc_dec_shared": ("P", "M"),
    "enc_dec_6_layers": ("P", "M/2"),
    "language_model": ("P", "M"),
    "prefix_lm": ("P", "M"),
}
# Cells the paper prints in bold (within 2 BASELINE_STD of the column's best).
TABLE2_BOLD = {(BASELINE_KEY, c) for c in COLUMNS} | {
    (("enc_dec_shared", "denoising"), c) for c in ("SQuAD", "SGLUE", "EnRo")}

# Table 4 (Sec. 3.3.1): high-level approaches, all on the encoder-decoder.  Prefix LM here is
# the same objective as Table 2's encoder-decoder LM row.  BERT-style: 15% of tokens corrupted
# (90% of them a mask token, 10% a random token), the target is the whole original text.
# Deshuffling: the inputs are the shuffled tokens, the target the original order.
TABLE4 = {
    ("encoder_decoder", "prefix_lm"): _row(80.69, 18.94, 77.99, 65.27, 26.86, 39.73, 27.49),
    ("encoder_decoder", "bert_style"): _row(82.96, 19.17, 80.65, 69.85, 26.78, 40.03, 27.41),
    ("encoder_decoder", "deshuffling"): _row(73.17, 18.59, 67.61, 58.47, 26.11, 39.30, 25.62),
}

# Table 5 (Sec. 3.3.2): simplifying the BERT objective.  MASS-style: 15% mask tokens, no random
# swap, full target.  Replace corrupted spans (the baseline, starred): each run of corrupted
# tokens -> one sentinel.  Drop corrupted tokens: drop them from the inputs, the target is the
# dropped tokens without sentinels (its GLUE gain comes from CoLA, 60.04 vs 53.84).
TABLE5 = {
    ("encoder_decoder", "bert_style"): TABLE4[("encoder_decoder", "bert_style")],
    ("encoder_decoder", "mass_style"): _row(82.32, 19.16, 80.10, 69.28, 26.79, 39.89, 27.55),
    ("encoder_decoder", "denoising"): BASELINE,
    ("encoder_decoder", "drop_tokens"): _row(84.44, 19.31, 80.52, 68.67, 27.07, 39.76, 27.82),
}

# Table 6 (Sec. 3.3.3): corruption rate of i.i.d. replace-spans denoising; 15% is the baseline.
TABLE6 = {
    ("encoder_decoder", "iid_10"): _row(82.82, 19.00, 80.38, 69.55, 26.87, 39.28, 27.44),
    ("encoder_decoder", "denoising"): BASELINE,
    ("encoder_decoder", "iid_25"): _row(83.00, 19.54, 80.96, 70.48, 27.04, 39.83, 27.47),
    ("encoder_decoder", "iid_50"): _row(81.27, 19.32, 79.80, 70.33, 27.01, 39.90, 27.49),
}

# Table 7 (Sec. 3.3.4): mean span length at 15% corruption (random spans, one sentinel per span);
# the baseline is i.i.d. corruption.
TABLE7 = {
    ("encoder_decoder", "denoising"): BASELINE,
    ("encoder_decoder", "span_2"): _row(83.54, 19.39, 82.09, 72.20, 26.76, 39.99, 27.63),
    ("encoder_decoder", "span_3"): _row(83.49, 19.62, 81.84, 72.53, 26.86, 39.65, 27.62),
    ("encoder_decoder", "span_5"): _row(83.40, 19.24, 82.05, 72.23, 26.88, 39.40, 27.53),
    ("encoder_decoder", "span_10"): _row(82.85, 19.33, 81.84, 70.44, 26.79, 39.49, 27.69),
}

# How the paper names the rows.
ARCHITECTURE_LABELS = {
    "encoder_decoder": "Encoder-decoder",
    "enc_dec_shared": "Enc-dec, shared",
    "enc_dec_6_layers": "Enc-dec, 6 layers",
    "language_model": "Language model",
    "prefix_lm": "Prefix LM",
}
OBJECTIVE_LABELS = {
    "denoising": "Denoising",
    "lm": "LM",
    "prefix_lm": "Prefix language modeling",
    "full_lm": "Language modeling",
    "bert_style": "BERT-style",
    "deshuffling": "Deshuffling",
    "mass_style": "MASS-style",
    "drop_tokens": "Drop corrupted tokens",
    "iid_10": "Corruption rate 10%",
    "iid_25": "Corruption rate 25%",
    "iid_50": "Corruption rate 50%",
    "span_2": "Span length 2",
    "span_3": "Span length 3",
    "span_5": "Span length 5",
    "span_10": "Span length 10",
    "no_pretraining": "No pre-training",
}
