"""The seed_encoders report: results.json (tools/seed_encoders.py) -> results.json, README.md table and
a bar chart (PNG) in an output directory.

Noise: each score is an accuracy on n validation examples, so its binomial standard error is
sqrt(p (1 - p) / n) (in points); a cell is marked (bold) when it is within 2 standard errors of the
column's best, the way the T5 paper bolds cells within 2 sigma of the best.  One run per cell: the
seed-to-seed spread of fine-tuning is not in this error bar, so the bar is a lower bound on the noise.
"""

from __future__ import annotations

import io
import json
import math
import os

ORDER = ("bert_mlm_nsp", "bert_mlm_only", "electra", "t5_span_corruption", "encoder_no_pretraining",
         "t5_no_pretraining")
LABELS = {"bert_mlm_nsp": "BERT (MLM + NSP)", "bert_mlm_only": "BERT (MLM only)", "electra": "ELECTRA",
          "t5_span_corruption": "T5 enc-dec (span corruption)",
          "encoder_no_pretraining": "encoder, no pretraining", "t5_no_pretraining": "T5, no pretraining"}


def score(results: dict, cell: str, task: str) -> float | None:
    best = results["cells"][cell]["tasks"].get(task, {}).get("best", {})
    return best.get("accuracy", {}).get("value")


def stderr_points(p_percent: float, n: int) -> float:
    p = p_percent / 100.0
    return 100.0 * math.sqrt(max(p * (1 - p), 1e-12) / n)


def table(results: dict) -> tuple[list[str], list[str], dict]:
    cells = [c for c in ORDER if c in results["cells"]]
    tasks = sorted({t for c in cells for t in results["cells"][c]["tasks"]})
    n = int(results["settings"]["eval_examples"])
    marks = {}
    for task in tasks:
        vals = {c: score(results, c, task) for c in cells}
        present = {c: v for c, v in vals.items() if v is not None}
        if not present:
            continue
        top = max(present.values())
        se = stderr_points(top, n)
        for c, v in present.items():
            marks[(c, task)] = top - v <= 2 * se
    return cells, tasks, marks


def render_md(results: dict) -> str:
    cells, tasks, marks = table(results)
    n = int(results["settings"]["eval_examples"])
    head = "| cell | pretraining steps | pretraining FLOPs | " + " | ".join(f"{t} accuracy" for t in tasks) + \
        " | mean |"
    lines = [head, "|" + "---|" * (len(tasks) + 4)]
    for c in cells:
        e = results["cells"][c]
        vals = [score(results, c, t) for t in tasks]
        shown = []
        for t, v in zip(tasks, vals):
            text = "n/a" if v is None else f"{v:.1f}"
            shown.append(f"**{text}**" if marks.get((c, t)) else text)
        mean = sum(v for v in vals if v is not None) / max(len([v for v in vals if v is not None]), 1)
        lines.append(f"| {LABELS.get(c, c)} | {e['pretrain_steps']} | {e['pretrain_flops']:.3g} | "
                     + " | ".join(shown) + f" | {mean:.1f} |")
    ses = []
    for t in tasks:
        vals = [score(results, c, t) for c in cells if score(results, c, t) is not None]
        if vals:
            ses.append(f"{t}: ±{stderr_points(max(vals), n):.1f} points")
    lines.append("")
    lines.append(f"Accuracy in percent on {n} validation examples, best over the fine-tuning evals.  "
                 f"Binomial standard error at the column's best: {'; '.join(ses)}.  Bold: within 2 standard "
                 f"errors of the column's best.")
    return "\n".join(lines)


def render_png(results: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    cells, tasks, _ = table(results)
    n = int(results["settings"]["eval_examples"])
    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(tasks), 1)
    for i, task in enumerate(tasks):
        xs, ys, errs = [], [], []
        for j, c in enumerate(cells):
            v = score(results, c, task)
            if v is not None:
                xs.append(j + (i - (len(tasks) - 1) / 2) * width)
                ys.append(v)
                errs.append(2 * stderr_points(v, n))
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=task)
    ax.set_xticks(range(len(cells)))
    ax.set_xticklabels([LABELS.get(c, c).replace(" (", "\n(").replace(", ", ",\n") for c in cells], fontsize=7)
    ax.set_ylabel("validation accuracy (%), ±2 s.e.")
    ax.set_title(f"seed_encoders: equal pretraining FLOPs ({results['budget_flops']:.2g}), then fine-tuning",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(results: dict, output: str) -> list[str]:
    os.makedirs(output, exist_ok=True)
    written = []
    path = os.path.join(output, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    written.append(path)
    path = os.path.join(output, "table.md")
    with open(path, "w") as f:
        f.write(render_md(results) + "\n")
    written.append(path)
    path = os.path.join(output, "seed_encoders.png")
    with open(path, "wb") as f:
        f.write(render_png(results))
    written.append(path)
    return written


if __name__ == "__main__":
    import sys
    with open(sys.argv[1]) as f:
        res = json.load(f)
    for w in write_report(res, sys.argv[2]):
        print("wrote", w)
