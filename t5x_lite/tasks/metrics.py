"""Downstream metrics, with the T5 paper's conventions.

Every metric is a function ``(targets, predictions) -> dict[str, float]`` over
*postprocessed* values (see postprocessors.py): class ids for classification,
floats for STS-B, strings for generation, lists of answer strings for SQuAD
targets.  Scores are percentages (0-100) as T5 reports them.

Classification scores are computed here with numpy (no sklearn dependency);
BLEU and ROUGE use the official scorers (sacrebleu, rouge-score), as the paper
does: SacreBLEU with ``tokenize="intl"`` and ``smooth_method="exp"``, ROUGE
F-measures (ROUGE-2-F is the CNN/DM column of the paper's tables).

An invalid prediction (postprocessed to -1) simply never equals a real label,
so it counts as wrong, as in T5.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

MetricFn = Callable[[Sequence, Sequence], dict]


def _check_lengths(targets, predictions) -> None:
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    if len(targets) == 0:
        raise ValueError("no examples to score")


# ----------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------

def accuracy(targets, predictions) -> dict[str, float]:
    """Percentage of predictions equal to their target."""
    _check_lengths(targets, predictions)
    hits = sum(1 for t, p in zip(targets, predictions) if t == p)
    return {"accuracy": 100.0 * hits / len(targets)}


def _f1_for_label(targets, predictions, label) -> float:
    """Binary F1 (0..1) treating `label` as the positive class; 0 when undefined."""
    tp = sum(1 for t, p in zip(targets, predictions) if t == label and p == label)
    fp = sum(1 for t, p in zip(targets, predictions) if t != label and p == label)
    fn = sum(1 for t, p in zip(targets, predictions) if t == label and p != label)
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2.0 * tp / denom


def f1_binary(targets, predictions) -> dict[str, float]:
    """F1 of class 1 for 0/1 labels (MRPC, QQP), T5's `f1_score_with_invalid`: an invalid
    prediction (anything but 0/1) is replaced by the wrong class, 1 - target, so it costs a
    false negative on positives and a false positive on negatives."""
    _check_lengths(targets, predictions)
    fixed = [p if p in (0, 1) else 1 - t for t, p in zip(targets, predictions)]
    return {"f1": 100.0 * _f1_for_label(targets, fixed, 1)}


def macro_f1(targets, predictions, labels: Iterable | None = None) -> dict[str, float]:
    """Unweighted mean of per-class F1 (T5's `mean_multiclass_f1`, CB).

    `labels` defaults to the classes present in the targets; an invalid
    prediction (-1) is never a class, so it only costs recall.
    """
    _check_lengths(targets, predictions)
    classes = sorted(set(targets)) if labels is None else list(labels)
    scores = [_f1_for_label(targets, predictions, c) for c in classes]
    return {"macro_f1": 100.0 * float(np.mean(scores))}


def mean_multiclass_f1(num_classes: int) -> MetricFn:
    """T5-named factory: macro F1 over class ids 0..num_classes-1."""
    def fn(targets, predictions):
        return {"mean_%dclass_f1" % num_classes:
                macro_f1(targets, predictions, range(num_classes))["macro_f1"]}
    fn.__name__ = f"mean_{num_classes}class_f1"
    return fn


def matthews_corrcoef(targets, predictions) -> dict[str, float]:
    """Matthews correlation x100 (CoLA), the multiclass (Gorodkin) form.

    With confusion matrix C (rows = target, cols = prediction), t_k/p_k the
    row/column sums, c = trace, s = total:
        MCC = (c*s - sum_k t_k p_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)),
    which reduces to (TP*TN - FP*FN)/sqrt(...) for two classes.  0 if undefined.
    """
    _check_lengths(targets, predictions)
    classes = sorted(set(targets) | set(predictions), key=repr)
    index = {c: i for i, c in enumerate(classes)}
    conf = np.zeros((len(classes), len(classes)), dtype=np.float64)
    for t, p in zip(targets, predictions):
        conf[index[t], index[p]] += 1
    t_sum, p_sum = conf.sum(axis=1), conf.sum(axis=0)
    c, s = np.trace(conf), conf.sum()
    cov_ytyp = c * s - np.dot(t_sum, p_sum)
    cov_ypyp = s * s - np.dot(p_sum, p_sum)
    cov_ytyt = s * s - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return {"matthews_corrcoef": 0.0}
    return {"matthews_corrcoef": 100.0 * float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))}


def accuracy_and_f1(targets, predictions) -> dict[str, float]:
    """MRPC / QQP: accuracy and F1 of class 1."""
    return {**accuracy(targets, predictions), **f1_binary(targets, predictions)}


def accuracy_and_macro_f1(targets, predictions) -> dict[str, float]:
    """Local classification tasks: accuracy and macro F1 over target classes."""
    return {**accuracy(targets, predictions), **macro_f1(targets, predictions)}


# ----------------------------------------------------------------------------
# Regression (STS-B)
# ----------------------------------------------------------------------------

def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return 0.0 if denom == 0 else float((x * y).sum() / denom)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def pearson_corrcoef(targets, predictions) -> dict[str, float]:
    _check_lengths(targets, predictions)
    x = np.asarray(targets, dtype=np.float64)
    y = np.asarray(predictions, dtype=np.float64)
    return {"pearson_corrcoef": 100.0 * _pearson(x, y)}


def spearman_corrcoef(targets, predictions) -> dict[str, float]:
    """Pearson correlation of the (tie-averaged) ranks."""
    _check_lengths(targets, predictions)
    x = _average_ranks(np.asarray(targets, dtype=np.float64))
    y = _average_ranks(np.asarray(predictions, dtype=np.float64))
    return {"spearman_corrcoef": 100.0 * _pearson(x, y)}


def pearson_and_spearman(targets, predictions) -> dict[str, float]:
    return {**pearson_corrcoef(targets, predictions), **spearman_corrcoef(targets, predictions)}


# ----------------------------------------------------------------------------
# SQuAD (v1.1 official normalisation)
# ----------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_squad(text: str) -> str:
    """Lowercase, drop punctuation, drop articles, collapse whitespace (v1.1 order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _token_f1(target: str, prediction: str) -> float:
    t, p = normalize_squad(target).split(), normalize_squad(prediction).split()
    common = collections.Counter(t) & collections.Counter(p)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def squad(targets, predictions) -> dict[str, float]:
    """Exact match and token F1, each the max over all reference answers.

    targets: list of answer lists (a bare string counts as one answer).
    """
    _check_lengths(targets, predictions)
    em = f1 = 0.0
    for answers, pred in zip(targets, predictions):
        if isinstance(answers, str):
            answers = [answers]
        if not answers:
            raise ValueError("a SQuAD target has no reference answer")
        em += max(float(normalize_squad(a) == normalize_squad(pred)) for a in answers)
        f1 += max(_token_f1(a, pred) for a in answers)
    n = len(targets)
    return {"em": 100.0 * em / n, "f1": 100.0 * f1 / n}


# ----------------------------------------------------------------------------
# Generation: ROUGE and BLEU (official scorers)
# ----------------------------------------------------------------------------

def _summary_lines(text: str) -> str:
    # rougeLsum treats newlines as sentence boundaries; T5 puts one sentence per
    # line by turning " . " boundaries into newlines.
    return text.replace(" . ", " .\n")


def rouge(targets, predictions, rouge_types=("rouge1", "rouge2", "rougeL", "rougeLsum"),
          use_stemmer: bool = False) -> dict[str, float]:
    """Mean ROUGE F-measures x100 via `rouge-score` (T5 reports rouge2 for CNN/DM).

    T5 averages with rouge-score's bootstrap aggregator and reports its mid
    value; the plain mean used here is that aggregate's point estimate without
    the resampling noise.
    """
    from rouge_score import rouge_scorer   # lazy: it loads nltk (seconds); keeps every CLI's start fast
    _check_lengths(targets, predictions)
    scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=use_stemmer)
    totals = collections.defaultdict(float)
    for t, p in zip(targets, predictions):
        scores = scorer.score(_summary_lines(t), _summary_lines(p))
        for key in rouge_types:
            totals[key] += scores[key].fmeasure
    return {key: 100.0 * totals[key] / len(targets) for key in rouge_types}


def bleu(targets, predictions, tokenize: str = "intl") -> dict[str, float]:
    """Corpus BLEU with T5's SacreBLEU settings (exp smoothing, intl tokenizer).

    targets: one reference string per example (or a list of references, all of
    the same count, for multi-reference sets).
    """
    import sacrebleu   # lazy: keeps `import t5x_lite.tasks` (and every CLI) fast
    _check_lengths(targets, predictions)
    if isinstance(targets[0], str):
        references = [list(targets)]
    else:
        width = len(targets[0])
        if any(len(t) != width for t in targets):
            raise ValueError("every example needs the same number of references")
        references = [[t[i] for t in targets] for i in range(width)]
    score = sacrebleu.corpus_bleu(list(predictions), references, smooth_method="exp",
                                  force=False, lowercase=False,
                                  tokenize=tokenize, use_effective_order=False)
    return {"bleu": float(score.score)}


def sequence_accuracy(targets, predictions) -> dict[str, float]:
    """Exact string match after stripping surrounding whitespace."""
    _check_lengths(targets, predictions)
    hits = sum(1 for t, p in zip(targets, predictions) if str(t).strip() == str(p).strip())
    return {"sequence_accuracy": 100.0 * hits / len(targets)}


# ----------------------------------------------------------------------------
# SuperGLUE grouped metrics (MultiRC, ReCoRD)
# ----------------------------------------------------------------------------

def multirc_f1_and_em(targets, predictions) -> dict[str, float]:
    """MultiRC: F1 over all answer options (f1a) and per-question exact match.

    targets/predictions are dicts {"group": question id, "value": 0/1 label}
    (postprocessed with the example's idx), as in T5's `multirc_f1_over_all_answers`
    + `mean_group_metric(all_match)`.
    """
    _check_lengths(targets, predictions)
    t_vals = [t["value"] for t in targets]
    p_vals = [p["value"] for p in predictions]
    groups: dict = collections.defaultdict(list)
    for t, p in zip(targets, predictions):
        groups[t["group"]].append(t["value"] == p["value"])
    em = float(np.mean([all(g) for g in groups.values()]))
    return {"f1a": 100.0 * _f1_for_label(t_vals, p_vals, 1), "em": 100.0 * em}


def record_em_and_f1(targets, predictions) -> dict[str, float]:
    """ReCoRD: SQuAD-style EM/F1, max over the correct entities (T5 `deduplicate_metric(squad)`)."""
    return squad(targets, predictions)


# ----------------------------------------------------------------------------
# Benchmark averages
# ----------------------------------------------------------------------------

# Sub-task names that are averaged into one GLUE task before the benchmark mean.
_TASK_GROUPS = {"mnli_matched": "mnli", "mnli_mismatched": "mnli"}

_GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
_SUPERGLUE_TASKS = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc")


def _short_name(task: str, prefix: str) -> str:
    name = task
    if name.startswith(prefix):
        name = name[len(prefix):]
    name = re.sub(r"_v\d+$", "", name)
    return _TASK_GROUPS.get(name, name)


def benchmark_average(results: Mapping[str, Mapping[str, float]], *, prefix: str = "",
                      exclude: Iterable[str] = ()) -> float:
    """Mean over tasks of (mean over that task's metrics), as GLUE/SuperGLUE do.

    results: task name -> {metric name: value}.  Tasks with several metrics (MRPC
    F1+acc, STS-B Pearson+Spearman, CB F1+acc, ...) count once with their
    metrics averaged; MNLI matched and mismatched are averaged into one task.
    """
    exclude = set(exclude)
    per_task: dict[str, list[float]] = collections.defaultdict(list)
    for task, metrics in results.items():
        short = _short_name(task, prefix)
        if short in exclude:
            continue
        if not metrics:
            raise ValueError(f"task {task!r} has no metrics")
        per_task[short].append(float(np.mean(list(metrics.values()))))
    if not per_task:
        raise ValueError("no tasks to average")
    return float(np.mean([np.mean(v) for v in per_task.values()]))


def glue_average(results: Mapping[str, Mapping[str, float]]) -> float:
    """The paper's GLUE column: WNLI excluded from the validation average."""
    return benchmark_average(results, prefix="glue_", exclude=("wnli",))


def superglue_average(results: Mapping[str, Mapping[str, float]]) -> float:
    return benchmark_average(results, prefix="super_glue_")


# The paper's table columns (Tables 1-16: GLUE, CNNDM, SQuAD, SGLUE, EnDe, EnFr, EnRo) from a
# {task name: metrics} dict, for T5's tasks or the local stand-ins (docs/downstream.md).
PAPER_COLUMNS = {
    "CNNDM": (("cnn_dailymail_v002", "local_summarize_debian"), "rouge2"),
    "SQuAD": (("squad_v010_allanswers", "local_qa_wordnet"), "em"),
    "EnDe": (("wmt_t2t_ende_v003", "local_translate_en_de"), "bleu"),
    "EnFr": (("wmt15_enfr_v003", "local_translate_en_fr"), "bleu"),
    "EnRo": (("wmt16_enro_v003", "local_translate_en_ro"), "bleu"),
}
LOCAL_CLASSIFICATION = ("local_debian_section", "local_wordnet_lexname")


def paper_row(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """One row of the paper's tables from per-task metrics; only the columns that can be filled.

    GLUE: `glue_average` of the glue_* tasks, or for the stand-ins the same averaging over the
    local classification tasks; SGLUE: `superglue_average`; the other columns take the paper's
    single metric of the T5 task, else of its local stand-in.
    """
    row: dict[str, float] = {}
    glue = {k: v for k, v in results.items() if k.startswith("glue_")}
    local_cls = {k: v for k, v in results.items() if k in LOCAL_CLASSIFICATION}
    if glue:
        row["GLUE"] = glue_average(glue)
    elif local_cls:
        row["GLUE"] = benchmark_average(local_cls)
    sglue = {k: v for k, v in results.items() if k.startswith("super_glue_")}
    if sglue:
        row["SGLUE"] = superglue_average(sglue)
    for column, (tasks, metric) in PAPER_COLUMNS.items():
        for task in tasks:
            if task in results and metric in results[task]:
                row[column] = float(results[task][metric])
                break
    order = ("GLUE", "CNNDM", "SQuAD", "SGLUE", "EnDe", "EnFr", "EnRo")
    return {k: row[k] for k in order if k in row}
