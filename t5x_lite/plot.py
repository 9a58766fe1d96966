"""`t5x-lite plot`: training curves of one or more runs as a PNG.

    t5x-lite plot WORKDIR [WORKDIR ...] [--output PNG]

Reads each workdir's metrics.jsonl (written by `t5x-lite train`) and draws, against the step,
the train loss with the eval loss, the learning rate, and one panel per other eval metric
(`eval/token_accuracy`, and each evaluator's `eval/<task>/<metric>`).  Several workdirs are
overlaid, one colour per run, labelled by the workdir's name.  A resumed run logs replayed steps
again: the last row of a step wins, as everywhere else.  Accuracies are in percent
(docs/training.md, "Units").

The default output is WORKDIR/metrics.png for one workdir, ./metrics.png for several.  Only
matplotlib's Agg canvas is used (no pyplot, no display needed).
"""

from __future__ import annotations

import io
import json
import math
import os

from t5x_lite.errors import ArgParser, UserError, check_writable_file

TRAIN_KEYS = ("loss", "learning_rate")
Series = dict[str, tuple[list[int], list[float]]]   # metric -> (steps, values)


def read_series(workdir: str) -> Series:
    """metric -> (steps, values) from WORKDIR/metrics.jsonl: the train loss, the learning rate and
    every numeric eval/* metric; the last row of a step wins; null values are left out."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isdir(workdir):
        raise UserError(f"{workdir}: no such directory")
    if not os.path.isfile(path):
        raise UserError(f"{workdir}: no metrics.jsonl (not a `t5x-lite train` workdir, or no step logged yet)")
    by_step: dict[str, dict[int, float]] = {}
    rows = 0
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.endswith("\n") or not line.strip():   # a row being written when the run was killed
                continue
            rows += 1
            try:
                row = json.loads(line)
                step = int(row["step"])
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{path}:{lineno}: not a metrics row (a JSON object with a step)") from None
            for key, value in row.items():
                if (key in TRAIN_KEYS or key.startswith("eval/")) and _number(value):
                    by_step.setdefault(key, {})[step] = float(value)
    if not rows:
        raise UserError(f"{path} is empty (no step logged yet)")
    if not by_step:
        raise UserError(f"{path} has no train loss, learning rate or eval metric to plot")
    return {k: (sorted(v), [v[s] for s in sorted(v)]) for k, v in by_step.items()}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_labels(workdirs: list[str]) -> list[str]:
    """Each workdir's name; parent/name where two names are the same."""
    parts = [os.path.normpath(os.path.abspath(w)).split(os.sep) for w in workdirs]
    labels = [p[-1] for p in parts]
    if len(set(labels)) < len(labels):
        labels = [os.path.join(*p[-2:]) for p in parts]
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({i + 1})" for i, label in enumerate(labels)]
    return labels


def panels(runs: dict[str, Series]) -> list[tuple[str, list[str]]]:
    """(title, metric keys drawn in it): loss (train, eval), learning rate, then every other eval metric."""
    keys = {k for series in runs.values() for k in series}
    out = []
    if keys & {"loss", "eval/loss"}:
        out.append(("loss (train: line, eval: squares)", [k for k in ("loss", "eval/loss") if k in keys]))
    if "learning_rate" in keys:
        out.append(("learning rate", ["learning_rate"]))
    rest = sorted(k for k in keys if k.startswith("eval/") and k != "eval/loss")
    # the teacher-forced token accuracy first, then the evaluator metrics by task
    rest.sort(key=lambda k: (k.count("/") > 1, k))
    out += [(k + (" (%)" if k.endswith("accuracy") else ""), [k]) for k in rest]
    return out


def render(runs: dict[str, Series]) -> bytes:
    """The PNG of the runs' curves (one panel per entry of `panels`, one colour per run)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg   # lazy: keeps `t5x-lite --help` fast
    from matplotlib.figure import Figure

    layout = panels(runs)
    ncols = 2 if len(layout) > 1 else 1
    nrows = math.ceil(len(layout) / ncols)
    fig = Figure(figsize=(6.0 * ncols, 3.0 * nrows + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    colors = {label: f"C{i % 10}" for i, label in enumerate(runs)}
    for i, (title, keys) in enumerate(layout):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for label, series in runs.items():
            for key in keys:
                if key not in series:
                    continue
                steps, values = series[key]
                # evals are few and far between: markers; in the loss panel squares on a dotted line
                is_eval = key.startswith("eval/")
                ax.plot(steps, values, color=colors[label], linewidth=1.2 if not is_eval or len(keys) == 1 else 0.8,
                        linestyle=":" if is_eval and len(keys) > 1 else "-",
                        marker=("s" if len(keys) > 1 else "o") if is_eval or len(steps) == 1 else None,
                        markersize=4, label=label if i == 0 and key == keys[0] else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if keys == ["learning_rate"]:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if layout:
        fig.axes[0].legend(fontsize=8, framealpha=0.9)
    fig.suptitle(" vs ".join(runs) if len(runs) > 1 else next(iter(runs)), fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def plot(workdirs: list[str], output: str | None = None) -> tuple[str, dict[str, Series]]:
    """Write the PNG of `workdirs`' curves; returns (its path, {run label: its series})."""
    if not workdirs:
        raise UserError("give at least one WORKDIR")
    output = output or (os.path.join(workdirs[0], "metrics.png") if len(workdirs) == 1 else "metrics.png")
    check_writable_file(output, "--output")
    runs = {label: read_series(w) for label, w in zip(run_labels(workdirs), workdirs)}
    png = render(runs)
    try:
        with open(output, "wb") as f:
            f.write(png)
    except OSError as e:
        raise UserError(f"cannot write --output {output}: {e.strerror}") from None
    return output, runs


def main(argv: list[str] | None = None) -> int:
    p = ArgParser(prog="t5x-lite plot", description="train loss, learning rate and eval metrics against "
                  "step, from each WORKDIR's metrics.jsonl, as one PNG (several runs overlaid)")
    p.add_argument("workdirs", nargs="+", metavar="WORKDIR", help="a `t5x-lite train` workdir")
    p.add_argument("--output", metavar="PNG",
                   help="the PNG to write (default: WORKDIR/metrics.png, or ./metrics.png for several)")
    args = p.parse_args(argv)
    path, runs = plot(args.workdirs, args.output)
    for label, series in runs.items():
        last = max(max(steps) for steps, _ in series.values())
        print(f"{label}: {len(series)} metrics up to step {last}")
    print(f"wrote {path}")
    return 0
