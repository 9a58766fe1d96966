"""Studies: named grids of cells, following the paper's rules (Raffel et al. 2020, Sec. 3.2-3.3).

    Cell(architecture, objective, seed)     one pretrain -> fine-tune -> evaluate run
    Study(name, title, cells, paper, ...)   the cells in the paper's row order, plus the paper's rows
    get_study(name, seeds=3), study_names()
    cell_plan(cell, base_model_cfg, recipe) -> CellPlan: the model, task and shared hyperparameters
    budget(cell, base_model_cfg, tokens)    -> params, FLOPs per token, pretraining FLOPs

Architectures are the five of Table 2 (t5x_lite.models.table2_configs), all derived from
one encoder-decoder config with L layers per stack:

    encoder_decoder    L + L layers              2P  M
    enc_dec_shared     L layers for both stacks   P  M
    enc_dec_6_layers   L/2 + L/2 layers           P  M/2
    language_model     decoder-only, causal       P  M    (reads inputs ++ targets)
    prefix_lm          decoder-only, prefix mask  P  M    (inputs fully visible)

Objectives are data (OBJECTIVES): a name -> one of the pretraining objectives of
t5x_lite.data.preprocessors.OBJECTIVES plus its keyword arguments, so any objective can run
over any text source; `builtin_task` names the registered task on the shipped corpus.
"lm" is the paper's LM column: a random-point prefix -> continuation split for every model
that takes a prefix, the plain left-to-right LM for the decoder-only language model.  With a
denoising objective the decoder-only models read inputs ++ targets (the data pipeline's
prefix-LM feature converter; the causal language model keeps its causal mask throughout).

Every study also has the paper's "No pre-training" row as a control cell (the baseline model
fine-tuned from scratch) and repeats the baseline cell (encoder_decoder, denoising) over
`seeds` seeds: the mean and std of those runs are the paper's starred row and its noise
estimate.

All cells of a study share one Recipe: the same sequence length, batch size, pretraining
steps (so the same token budget) and the same hyperparameters, chosen once on the baseline
as the paper did; cell_plan differs between cells only in the model and the task.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

from t5x_lite.data.preprocessors import random_spans_helper
from t5x_lite.errors import UserError
from t5x_lite.models import ModelConfig, count_params, flops_per_token, table2_configs
from t5x_lite.study import paper

ARCHITECTURES = ("encoder_decoder", "enc_dec_shared", "enc_dec_6_layers", "language_model", "prefix_lm")
DECODER_ONLY = ("language_model", "prefix_lm")
DEFAULT_SEEDS = 3
BASELINE_KEY, CONTROL_KEY = paper.BASELINE_KEY, paper.CONTROL_KEY
NO_PRETRAINING = "no_pretraining"


# --------------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Objective:
    preprocessor: str       # a key of t5x_lite.data.preprocessors.OBJECTIVES
    kwargs: tuple = ()      # its keyword arguments, as (name, value) pairs
    builtin_task: str = ""  # the task registered on the shipped corpus with exactly this objective
    targets: str = "full"   # how the targets length follows from the inputs length (see feature_lengths)

    def kw(self) -> dict:
        return dict(self.kwargs)


def _iid(rate: int) -> Objective:
    return Objective("iid_denoising", (("noise_density", rate / 100),), f"builtin_iid_denoising_{rate}", "runs")


def _span(length: int) -> Objective:
    task = "builtin_span_corruption" if length == 3 else f"builtin_span_corruption_len{length}"
    return Objective("span_corruption", (("mean_noise_span_length", float(length)),), task, "spans")


OBJECTIVES: dict[str, Objective] = {
    # Table 2 baseline = Table 5 "replace corrupted spans" = Table 6 15% = Table 7 i.i.d.
    "denoising": Objective("iid_denoising", (), "builtin_iid_denoising", "runs"),
    "prefix_lm": Objective("prefix_lm", (), "builtin_prefix_lm", "full"),
    "full_lm": Objective("full_lm", (), "builtin_lm", "lm"),
    "bert_style": Objective("bert_style", (), "builtin_bert_style", "full"),
    "mass_style": Objective("mass_style", (), "builtin_mass_style", "full"),
    "deshuffling": Objective("deshuffle", (), "builtin_deshuffle", "full"),
    "drop_tokens": Objective("drop_tokens", (), "builtin_drop_tokens", "dropped"),
    **{f"iid_{rate}": _iid(rate) for rate in (10, 25, 50)},
    **{f"span_{n}": _span(n) for n in (2, 3, 5, 10)},
}
# The paper's "LM" objective depends on the model: the decoder-only language model predicts the
# whole span; every model that takes a prefix gets the random-point split.
LM_BY_ARCHITECTURE = {"language_model": "full_lm"}
LM_DEFAULT = "prefix_lm"


def resolve_objective(objective: str, architecture: str) -> str:
    """A cell's objective name -> a key of OBJECTIVES ("" for no_pretraining)."""
    if objective == NO_PRETRAINING:
        return ""
    if objective == "lm":
        return LM_BY_ARCHITECTURE.get(architecture, LM_DEFAULT)
    if objective not in OBJECTIVES:
        raise UserError(f"unknown study objective {objective!r}; choose from "
                        f"{sorted(OBJECTIVES) + ['lm', NO_PRETRAINING]}")
    if objective == "full_lm" and architecture not in DECODER_ONLY:
        raise UserError(f"objective full_lm has no inputs, so it needs a decoder-only architecture, "
                        f"not {architecture}")
    return objective


# T5's gin files give i.i.d. replace-spans denoising 192 targets for 512 inputs and drop-tokens
# 104: about 1.35x the expected length (corrupted tokens, plus one sentinel per run of them).
# The same headroom gives every rate and sequence length its targets length; spans use T5's
# exact random_spans_helper arithmetic.
TARGETS_HEADROOM = 1.35


def _ceil8(x: float) -> int:
    return max(8, 8 * math.ceil(x / 8 - 1e-9))


def feature_lengths(objective: str, sequence_length: int) -> dict[str, int]:
    """Feature lengths of a resolved objective at `sequence_length` inputs tokens (the
    decoder-only models read inputs ++ targets, so their sequence is the sum)."""
    obj, s = OBJECTIVES[objective], int(sequence_length)
    rate = obj.kw().get("noise_density", 0.15)
    if obj.targets == "lm":                # no inputs: the whole span is the target
        return {"targets": s}
    if obj.targets == "full":              # the target is (a split of) the original text
        return {"inputs": s, "targets": s}
    if obj.targets == "runs":              # corrupted tokens + one sentinel per run (512 -> 192)
        return {"inputs": s, "targets": _ceil8(TARGETS_HEADROOM * s * (rate + rate * (1 - rate)))}
    if obj.targets == "dropped":           # the corrupted tokens only (512 -> 104)
        return {"inputs": s, "targets": _ceil8(TARGETS_HEADROOM * s * rate)}
    if obj.targets == "spans":             # exact: 512 -> 114 at mean span 3
        return {"inputs": s, "targets": random_spans_helper(s, rate, obj.kw()["mean_noise_span_length"])[1]}
    raise ValueError(f"objective {objective}: unknown targets rule {obj.targets!r}")


# --------------------------------------------------------------------------------------------------
# Cells and studies
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Cell:
    architecture: str
    objective: str
    seed: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.architecture, self.objective)

    @property
    def name(self) -> str:
        """Unique within a study; safe as a directory name."""
        return f"{self.architecture}-{self.objective}-s{self.seed}"

    def validate(self) -> "Cell":
        if self.architecture not in ARCHITECTURES:
            raise UserError(f"unknown study architecture {self.architecture!r}; choose from {list(ARCHITECTURES)}")
        resolve_objective(self.objective, self.architecture)
        if self.objective == NO_PRETRAINING and self.key != CONTROL_KEY:
            raise UserError(f"the no_pretraining control is {CONTROL_KEY}, not {self.key}")
        return self


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    title: str
    cells: tuple[Cell, ...]
    paper: Mapping[tuple[str, str], Mapping[str, float]]   # the paper's rows, baseline and control included
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)   # objective -> the paper's row name
    columns: tuple[str, ...] = paper.COLUMNS
    baseline: tuple[str, str] = BASELINE_KEY
    control: tuple[str, str] = CONTROL_KEY

    def keys(self) -> list[tuple[str, str]]:
        """The (architecture, objective) rows in order, each once."""
        return list(dict.fromkeys(c.key for c in self.cells))

    def label(self, key: tuple[str, str]) -> tuple[str, str]:
        """(architecture, objective) as the paper names them."""
        arch, obj = key
        return (paper.ARCHITECTURE_LABELS.get(arch, arch),
                self.labels.get(obj, paper.OBJECTIVE_LABELS.get(obj, obj)))


# name -> (title, rows in the paper's order, the paper's table, objective -> row name in that table)
STUDY_DEFS = {
    "t5_table2": ("Table 2: architectures x objectives (Sec. 3.2)",
                  [(a, o) for o in ("denoising", "lm") for a in ARCHITECTURES], paper.TABLE2, {}),
    "t5_table4": ("Table 4: high-level pre-training approaches on the encoder-decoder (Sec. 3.3.1)",
                  [BASELINE_KEY] + [("encoder_decoder", o) for o in ("prefix_lm", "bert_style", "deshuffling")],
                  paper.TABLE4, {"denoising": "Baseline (replace corrupted spans)"}),
    "t5_table5": ("Table 5: simplifying the BERT objective (Sec. 3.3.2)",
                  [("encoder_decoder", o) for o in ("bert_style", "mass_style", "denoising", "drop_tokens")],
                  paper.TABLE5, {"denoising": "Replace corrupted spans"}),
    "t5_table6": ("Table 6: corruption rate of i.i.d. denoising (Sec. 3.3.3)",
                  [("encoder_decoder", o) for o in ("iid_10", "denoising", "iid_25", "iid_50")],
                  paper.TABLE6, {"iid_10": "10%", "denoising": "15%", "iid_25": "25%", "iid_50": "50%"}),
    "t5_table7": ("Table 7: mean corrupted-span length at 15% corruption (Sec. 3.3.4)",
                  [("encoder_decoder", o) for o in ("denoising", "span_2", "span_3", "span_5", "span_10")],
                  paper.TABLE7, {"denoising": "Baseline (i.i.d.)", "span_2": "2", "span_3": "3",
                                 "span_5": "5", "span_10": "10"}),
}


def study_names() -> list[str]:
    return list(STUDY_DEFS)


def get_study(name: str, seeds: int = DEFAULT_SEEDS) -> Study:
    """A built-in study with the baseline repeated over `seeds` seeds (0 .. seeds-1) and the
    no_pretraining control last."""
    if name not in STUDY_DEFS:
        raise UserError(f"unknown study {name!r}; choose from {study_names()}")
    if int(seeds) < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    title, keys, table, labels = STUDY_DEFS[name]
    cells = [Cell(*key, seed=s) for key in keys for s in range(int(seeds) if key == BASELINE_KEY else 1)]
    cells.append(Cell(*CONTROL_KEY))
    rows = {**table, BASELINE_KEY: paper.BASELINE, CONTROL_KEY: paper.NO_PRETRAINING}
    return Study(name, title, tuple(c.validate() for c in cells), rows, dict(labels))


# --------------------------------------------------------------------------------------------------
# Cell -> model, task and budget
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Recipe:
    """What every cell of a study shares.  The token budget is pretrain_steps x batch_size x
    sequence_length, the same for every cell (the paper: 2^19 steps of 128 x 512 = 2^35 tokens).
    `hparams` holds everything else (optimizer, fine-tuning, evaluation): opaque here, and
    passed to every cell unchanged."""
    sequence_length: int = 512
    batch_size: int = 128
    pretrain_steps: int = 2 ** 19
    source: str = "builtin"      # "builtin" = the shipped corpus and its registered tasks; "local" = the
                                 # local corpus (t5x-lite data build-local); "c4" = C4 en, as T5 (the user's
                                 # allenai/c4 shards or TFDS c4/en:2.2.0); or a "text:GLOB" / "jsonl:GLOB" spec
    hparams: Mapping = dataclasses.field(default_factory=dict)

    @property
    def pretrain_tokens(self) -> int:
        return int(self.pretrain_steps) * int(self.batch_size) * int(self.sequence_length)


@dataclasses.dataclass(frozen=True)
class CellPlan:
    """What to train for one cell.  Between the cells of a study only the first block differs
    (and the seed); the control has no pretraining (pretrain_steps 0, task "")."""
    cell: Cell
    model: ModelConfig          # table2_configs(base)[architecture]
    objective: str              # resolved: "lm" -> "prefix_lm" | "full_lm"; "" for the control
    preprocessor: str           # preprocessors.OBJECTIVES key, with preprocessor_kwargs
    preprocessor_kwargs: Mapping
    task: str                   # the registered task when recipe.source == "builtin", else ""
    feature_lengths: Mapping[str, int]
    seed: int                   # seeds pretraining and fine-tuning
    # shared by every cell of the study
    sequence_length: int
    batch_size: int
    pretrain_steps: int
    pretrain_tokens: int
    source: str
    hparams: Mapping


def model_config(architecture: str, base_model_cfg: ModelConfig) -> ModelConfig:
    """The cell's model: the base encoder-decoder reshaped as in Table 2."""
    if architecture not in ARCHITECTURES:
        raise UserError(f"unknown study architecture {architecture!r}; choose from {list(ARCHITECTURES)}")
    if base_model_cfg.architecture != "encoder_decoder":
        raise UserError(f"a study's base model must be an encoder_decoder, got {base_model_cfg.architecture}")
    return table2_configs(base_model_cfg)[architecture]


def cell_plan(cell: Cell, base_model_cfg: ModelConfig, recipe: Recipe) -> CellPlan:
    """The one cell -> config function.  With recipe.source other than "builtin" the runner builds
    the task itself, e.g. tasks.pretraining_task(name, source, plan.preprocessor, vocab,
    **plan.preprocessor_kwargs).  Fine-tuning a decoder-only cell uses the paper's
    "... target: ..." format (fully visible up to and including "target:" for the prefix LM)."""
    cell.validate()
    objective = resolve_objective(cell.objective, cell.architecture)
    pretrain = objective != ""
    obj = OBJECTIVES.get(objective)
    # the control is fine-tuned from scratch; its lengths are the baseline's for the budget columns
    lengths = feature_lengths(objective if pretrain else BASELINE_KEY[1], recipe.sequence_length)
    return CellPlan(
        cell=cell, model=model_config(cell.architecture, base_model_cfg), objective=objective,
        preprocessor=obj.preprocessor if pretrain else "", preprocessor_kwargs=obj.kw() if pretrain else {},
        task=obj.builtin_task if pretrain and recipe.source == "builtin" else "",
        feature_lengths=lengths, seed=int(cell.seed),
        sequence_length=int(recipe.sequence_length), batch_size=int(recipe.batch_size),
        pretrain_steps=int(recipe.pretrain_steps) if pretrain else 0,
        pretrain_tokens=recipe.pretrain_tokens if pretrain else 0,
        source=recipe.source, hparams=recipe.hparams)


def budget(cell: Cell, base_model_cfg: ModelConfig, tokens: int, sequence_length: int = 512) -> dict:
    """Parameters and training FLOPs of a cell from the analytic counters (no compute):
    {"params", "flops_per_token", "pretrain_flops", "input_length", "target_length"}.
    `tokens` counts sequence_length tokens per pretraining example, as the paper does
    (2^35 = 2^19 steps x 128 x 512), so pretrain_flops = tokens / sequence_length x the FLOPs
    of one example at the objective's feature lengths (0 for the control).  FLOPs per token
    count a token as one input or target position at those lengths, padding included (a
    prefix-LM split of sequence_length tokens fills about half of its inputs + targets, so
    packing puts about two examples in a row)."""
    plan = cell_plan(cell, base_model_cfg, Recipe(sequence_length=sequence_length))
    # the decoder-only models run inputs ++ targets through one stack; full_lm has no inputs
    lin, lt = int(plan.feature_lengths.get("inputs", 0)), int(plan.feature_lengths["targets"])
    fpt = flops_per_token(plan.model, lin, lt)
    examples = int(tokens) / int(sequence_length) if plan.objective else 0.0
    return {"params": count_params(plan.model), "flops_per_token": fpt,
            "pretrain_flops": examples * fpt * (lin + lt), "input_length": lin, "target_length": lt}
