"""Scales: presets of the one study code path (t5x_lite/study/runner.py); only the numbers differ.

    smoke   seconds; the tests and CI (the shipped corpus and builtin_wordnet_pos only: no dataset needed)
    cpu     a 2-core machine: the whole of t5_table2 (13 cells), sized for 90 minutes (the committed run
            took 109: decoder-only cells cost 2.5x an encoder-decoder cell), GLUE-like column only
            (CPU_SCALE below; chosen by the pilots of docs/studies.md)
    gpu     one H100/H200: T5-small-sized
    paper   a TPU pod or GPU cluster: T5.1.0-base, 2^19 pretraining steps of 128 x 512 tokens, 2^18
            fine-tuning steps, T5's own downstream tasks (TFDS data prepared by the user)

A Scale holds the base model (the baseline encoder-decoder; t5x_lite.models.table2_configs reshapes
it into every cell's architecture), the pretraining Recipe every cell shares (sequence length, batch,
steps, optimizer; studies.Recipe), the fine-tuning settings (Finetune: the downstream tasks of each
column in the paper's order, steps, batch, learning rate, an optional cap on training examples, how
often and on how many validation examples to evaluate) and the default number of baseline seeds.

Columns of the local scales (the paper's order; the local stand-ins of docs/downstream.md):
    GLUE    mean accuracy of local_wordnet_lexname and local_debian_section
    CNNDM   local_summarize_debian, ROUGE-2-F
    SQuAD   local_qa_wordnet, exact match
    SGLUE   no local stand-in: the column is left out
    EnDe / EnFr / EnRo   local_translate_en_{de,fr,ro}, SacreBLEU
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from t5x_lite.errors import UserError
from t5x_lite.models import ModelConfig
from t5x_lite.study.studies import DEFAULT_SEEDS, Recipe


@dataclasses.dataclass(frozen=True)
class FinetuneTask:
    """One fine-tuning run: a registered task or mixture, the metric key its metric_fns return
    ("" for a GLUE/SuperGLUE mixture: T5's benchmark average over its tasks and their metrics) and
    its feature lengths."""
    task: str
    metric: str
    inputs_length: int
    targets_length: int


@dataclasses.dataclass(frozen=True)
class Finetune:
    """Fine-tuning of every cell (the same for all of them): one run per task, each keeping its best
    validation score per metric (evaluated every eval_every steps on the first eval_examples examples
    of the validation split, greedy decoding); a column is the mean of its tasks' best scores."""
    columns: Mapping[str, tuple[FinetuneTask, ...]]   # the paper's column -> the tasks averaged into it
    steps: int
    batch_size: int
    learning_rate: float                 # Adafactor, constant (the paper: 0.001)
    eval_examples: int
    eval_every: int
    max_decode_length: int               # cap on each task's targets_length
    max_train_examples: int = 0          # > 0: low-resource, this many rows of a fixed shuffle of train
    dropout_rate: float = 0.1            # the paper's fine-tuning dropout
    checkpoint_every: int = 0            # 0 = eval_every
    eval_batch_size: int = 32
    mixture: bool = False                # True: one run per cell on an equal-rate mixture of every task
                                         # (each task still scored at its own best evaluation), not one per task

    def tasks(self) -> list[FinetuneTask]:
        """Every task once, in column order."""
        return list({t.task: t for col in self.columns.values() for t in col}.values())

    def runs(self, mixture_name: str) -> list[FinetuneTask]:
        """The fine-tuning runs of a cell: each task, or (mixture) one run on `mixture_name` at the
        longest of the tasks' lengths, its metric "" (scores are read per task)."""
        tasks = self.tasks()
        if not self.mixture:
            return tasks
        return [FinetuneTask(mixture_name, "", max(t.inputs_length for t in tasks),
                             max(t.targets_length for t in tasks))]


@dataclasses.dataclass(frozen=True)
class Scale:
    name: str
    description: str                     # one line
    model: ModelConfig                   # the baseline encoder-decoder (vocab_size 0 = the vocabulary's size)
    recipe: Recipe                       # pretraining, shared by every cell; hparams = config sections
    finetune: Finetune
    seeds: int = DEFAULT_SEEDS           # baseline seeds when --seeds is not given
    vocabulary: str = "builtin"
    notes: tuple[str, ...] = ()          # copied into results.json

    @property
    def columns(self) -> list[str]:
        return list(self.finetune.columns)


def _hparams(optimizer: dict, checkpoint_every: int, log_every: int = 10, eval_steps: int = 2, **train) -> dict:
    """Recipe.hparams: config sections (t5x_lite/train/default_config.py) every pretraining stage sets."""
    return {"optimizer": dict(optimizer),
            "train": dict(checkpoint_every=checkpoint_every, log_every=log_every, eval_steps=eval_steps, **train)}


def _local_columns(lengths: Mapping[str, tuple[int, int]]) -> dict[str, tuple[FinetuneTask, ...]]:
    """The local stand-ins, column by column, at (inputs, targets) lengths per task."""
    def t(task, metric):
        return FinetuneTask(task, metric, *lengths[task])
    return {"GLUE": (t("local_wordnet_lexname", "accuracy"), t("local_debian_section", "accuracy")),
            "CNNDM": (t("local_summarize_debian", "rouge2"),),
            "SQuAD": (t("local_qa_wordnet", "em"),),
            "EnDe": (t("local_translate_en_de", "bleu"),),
            "EnFr": (t("local_translate_en_fr", "bleu"),),
            "EnRo": (t("local_translate_en_ro", "bleu"),)}


LOCAL_NOTE = ("SGLUE has no local stand-in and is left out; GLUE = mean accuracy of local_wordnet_lexname and "
              "local_debian_section, CNNDM = local_summarize_debian ROUGE-2-F, SQuAD = local_qa_wordnet exact "
              "match (semi-synthetic), EnDe/EnFr/EnRo = local_translate_en_* SacreBLEU (docs/downstream.md)")


def _t5_1_0(d_model, num_heads, d_ff, layers, **kw) -> ModelConfig:
    """The paper's model family: ReLU MLP, tied embeddings, 64-wide heads unless given."""
    return ModelConfig(d_model=d_model, num_heads=num_heads, d_kv=kw.pop("d_kv", 64), d_ff=d_ff,
                       num_encoder_layers=layers, num_decoder_layers=layers, mlp_activations=("relu",),
                       tie_embeddings=True, **kw)


# --------------------------------------------------------------------------------------------------
# smoke: seconds per stage, for the tests.  One GLUE-like task on the shipped corpus; no other column.
# --------------------------------------------------------------------------------------------------
SMOKE = Scale(
    name="smoke", description="seconds per stage; tests and CI (shipped corpus, builtin_wordnet_pos only)",
    model=_t5_1_0(32, 2, 64, 2, d_kv=16),
    recipe=Recipe(sequence_length=32, batch_size=8, pretrain_steps=8,
                  hparams=_hparams({"learning_rate": 0.01}, checkpoint_every=4, log_every=4, eval_steps=1)),
    finetune=Finetune(columns={"GLUE": (FinetuneTask("builtin_wordnet_pos", "accuracy", 32, 4),)},
                      steps=8, batch_size=8, learning_rate=0.003, eval_examples=16, eval_every=4,
                      max_decode_length=4, checkpoint_every=4, eval_batch_size=16),
    seeds=2,
    notes=("smoke scale: numbers measure nothing; GLUE = builtin_wordnet_pos accuracy (the shipped corpus's "
           "WordNet glosses -> part of speech), the only column",))

# --------------------------------------------------------------------------------------------------
# cpu: this 2-core machine: the 13 cells of t5_table2, sized for 90 minutes.  Fixed from the pilots in
# docs/studies.md (tools/study_pilot.py) before the committed run; everything the cpu scale uses is
# read from this one dict.  Only the GLUE-like column is fine-tuned: in the pilots a 7-task mixture
# scored 0 on every generation task after 300 steps, so those columns would measure nothing here.
# --------------------------------------------------------------------------------------------------
CPU_SCALE = dict(
    d_model=128, num_heads=4, d_kv=32, d_ff=512, layers=2,          # base encoder-decoder: 2 + 2 layers, 1.97M params
    pretrain_dropout=0.0,
    source="local",                                                 # the local corpus (data build-local)
    sequence_length=128, batch_size=32, pretrain_steps=300,         # 1.2M tokens per cell
    pretrain_optimizer={"name": "adafactor", "schedule": "constant", "learning_rate": 0.01},
    pretrain_checkpoint_every=100,
    finetune_steps=240, finetune_batch_size=32, finetune_learning_rate=0.003,
    finetune_dropout=0.1,
    max_train_examples=500,                                         # > 0: low-resource fine-tuning
    mixture=False,                                                  # True: one run per cell on a mixture of the tasks
    eval_examples=600, eval_every=120, max_decode_length=16, eval_batch_size=64,
    # (inputs, targets) tokens per task (docs/downstream.md: the lengths' 90th percentiles)
    lengths={"local_wordnet_lexname": (64, 16), "local_debian_section": (128, 8),
             "local_summarize_debian": (128, 32), "local_qa_wordnet": (128, 32),
             "local_translate_en_de": (64, 64), "local_translate_en_fr": (64, 64),
             "local_translate_en_ro": (64, 64)},
    columns=("GLUE",),                                              # the columns fine-tuned and scored
    seeds=3,
)


def cpu_scale(**overrides) -> Scale:
    """The cpu scale, or (overrides: keys of CPU_SCALE) a variant of it, e.g. for the pilots that chose it."""
    unknown = sorted(set(overrides) - set(CPU_SCALE))
    if unknown:
        raise UserError(f"cpu scale has no setting {unknown[0]!r}; its settings: {', '.join(CPU_SCALE)}")
    v = {**CPU_SCALE, **overrides}
    columns = {c: t for c, t in _local_columns(v["lengths"]).items() if c in v["columns"]}
    return Scale(
        name="cpu", description=f"a 2-core CPU: d_model {v['d_model']}, {v['layers']}+{v['layers']} layers, "
                                f"{v['pretrain_steps']} pretraining steps of {v['batch_size']}x{v['sequence_length']} "
                                f"on the {v['source']} corpus, {v['finetune_steps']} fine-tuning steps per task, "
                                f"columns {', '.join(v['columns'])}",
        model=_t5_1_0(v["d_model"], v["num_heads"], v["d_ff"], v["layers"], d_kv=v["d_kv"],
                      dropout_rate=v["pretrain_dropout"]),
        recipe=Recipe(sequence_length=v["sequence_length"], batch_size=v["batch_size"],
                      pretrain_steps=v["pretrain_steps"], source=v["source"],
                      hparams=_hparams(v["pretrain_optimizer"], checkpoint_every=v["pretrain_checkpoint_every"])),
        finetune=Finetune(columns=columns, steps=v["finetune_steps"],
                          batch_size=v["finetune_batch_size"], learning_rate=v["finetune_learning_rate"],
                          eval_examples=v["eval_examples"], eval_every=v["eval_every"],
                          max_decode_length=v["max_decode_length"], max_train_examples=v["max_train_examples"],
                          dropout_rate=v["finetune_dropout"], eval_batch_size=v["eval_batch_size"],
                          mixture=v["mixture"]),
        seeds=v["seeds"], notes=(LOCAL_NOTE,) + (() if len(columns) == len(_local_columns(v["lengths"])) else (
            f"cpu scale: only {', '.join(v['columns'])} fine-tuned and scored; in the pilots (docs/studies.md) a "
            "2M-parameter model fine-tuned for 300 steps on a mixture of all seven tasks scored 0 on every "
            "generation task, so those columns would measure nothing at this compute",)))


# --------------------------------------------------------------------------------------------------
# gpu: one H100/H200, T5-small-sized (T5.1.0 small: 512 wide, 8 heads, 6 + 6 layers), bfloat16.
# --------------------------------------------------------------------------------------------------
GPU = Scale(
    name="gpu", description="one H100/H200: T5.1.0-small-sized, 2^14 pretraining steps of 128x512 on the "
                            "local corpus, 2^12 fine-tuning steps per task",
    model=_t5_1_0(512, 8, 2048, 6, dropout_rate=0.1, dtype="bfloat16"),
    # 2^30 tokens: about 70 passes over the local corpus, where the shipped 4.8M-token one would be ~220
    # (the paper's Table 9: heavy repetition hurts)
    recipe=Recipe(sequence_length=512, batch_size=128, pretrain_steps=2 ** 14, source="local",
                  hparams=_hparams({"name": "adafactor", "schedule": "rsqrt", "learning_rate": 1.0,
                                    "warmup_steps": 2 ** 12}, checkpoint_every=2000, log_every=100,
                                   eval_steps=10)),
    finetune=Finetune(columns=_local_columns({t: (512, 128) for t in (
                          "local_wordnet_lexname", "local_debian_section", "local_summarize_debian",
                          "local_qa_wordnet", "local_translate_en_de", "local_translate_en_fr",
                          "local_translate_en_ro")}),
                      steps=2 ** 12, batch_size=128, learning_rate=0.001, eval_examples=1000, eval_every=1000,
                      max_decode_length=128, eval_batch_size=128),
    seeds=3, notes=(LOCAL_NOTE,))

# --------------------------------------------------------------------------------------------------
# paper: T5.1.0-base, the paper's budget (Sec. 3.1) and T5's own task names.
# --------------------------------------------------------------------------------------------------
PAPER_TASKS = {"GLUE": ("glue_v002_proportional", ""), "CNNDM": ("cnn_dailymail_v002", "rouge2"),
               "SQuAD": ("squad_v010_allanswers", "em"), "SGLUE": ("super_glue_v102_proportional", ""),
               "EnDe": ("wmt_t2t_ende_v003", "bleu"), "EnFr": ("wmt15_enfr_v003", "bleu"),
               "EnRo": ("wmt16_enro_v003", "bleu")}
PAPER = Scale(
    name="paper", description="T5.1.0-base (220M), 2^19 pretraining steps of 128x512 (2^35 tokens) on C4, "
                              "2^18 fine-tuning steps per task, T5's own tasks (a TPU pod or GPU cluster)",
    model=_t5_1_0(768, 12, 3072, 12, vocab_size=32128, dropout_rate=0.1, dtype="bfloat16"),
    recipe=Recipe(sequence_length=512, batch_size=128, pretrain_steps=2 ** 19, source="c4",
                  hparams=_hparams({"name": "adafactor", "schedule": "rsqrt", "learning_rate": 1.0,
                                    "warmup_steps": 10_000}, checkpoint_every=5000, log_every=100,
                                   eval_steps=20)),
    finetune=Finetune(columns={col: (FinetuneTask(task, metric, 512, 128),) for col, (task, metric) in
                               PAPER_TASKS.items()},
                      steps=2 ** 18, batch_size=128, learning_rate=0.001, eval_examples=10 ** 9,
                      eval_every=5000, max_decode_length=128, eval_batch_size=128),
    seeds=10,
    notes=("paper scale: T5's tasks read TFDS data the user has prepared (docs/downstream.md); GLUE and "
           "SuperGLUE are fine-tuned as one mixture each and scored as T5's benchmark average",))

SCALES: dict[str, Scale] = {s.name: s for s in (SMOKE, cpu_scale(), GPU, PAPER)}


def scale_names() -> list[str]:
    return list(SCALES)


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise UserError(f"unknown scale {name!r}; choose from {scale_names()}")
    return SCALES[name]
