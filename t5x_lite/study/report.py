"""A study's results.json -> table.md, table.png and report.md, the way the paper reports it.

results.json (other tools read it; keep the shape):
    {"study": NAME, "scale": SCALE, "columns": [COLUMN, ...],
     "cells": [{"architecture", "objective", "seed", "params", "flops_per_token",
                "metrics": {COLUMN: score}, optional "wall_s", "pretrain_flops"}, ...],
     optional "notes": [line, ...]}   (e.g. the corpus, the scale's choice; listed in report.md)

What the report computes (summarize):
  * a row per (architecture, objective): the mean over its seeds; the baseline's mean +- std
    (sample std over its seeds) is the paper's starred row, and that std is sigma per column;
  * bold: the cells within 2 sigma of their column's best, as the paper bolds (the
    no-pretraining control is a reference row and takes no part);
  * Kendall tau-b per column between our row means and the paper's numbers, over the rows
    both have (control excluded);
  * the paper's qualitative claims, checked on our numbers and on the paper's own.

    summarize(results) -> dict;  write_report(directory) -> [paths];  write_results(directory, results)
    kendall_tau_b(x, y), bold_cells(means, sigma, columns)
Every file is written atomically (a temporary file, then os.replace).
"""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg   # no pyplot: no global backend state
from matplotlib.figure import Figure

from t5x_lite import jsonio
from t5x_lite.errors import UserError, ensure_dir
from t5x_lite.study import paper
from t5x_lite.study.studies import BASELINE_KEY, CONTROL_KEY, STUDY_DEFS, get_study

RESULTS = "results.json"
CELL_FIELDS = {"architecture": str, "objective": str, "seed": int, "params": (int, float),
               "flops_per_token": (int, float), "metrics": dict}


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------
def atomic_write(path: str, data: str | bytes) -> str:
    """Write `data` to `path` so that readers see the old file or the new one, never a part."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def validate_results(results) -> dict:
    """The results.json shape, or a one-line UserError naming what is wrong."""
    if not isinstance(results, dict):
        raise UserError("results.json must hold an object")
    for key, kind in (("study", str), ("scale", str), ("columns", list), ("cells", list)):
        if not isinstance(results.get(key), kind):
            raise UserError(f"results.json: {key!r} must be a {kind.__name__}, got {results.get(key)!r:.60}")
    if not results["columns"] or not all(isinstance(c, str) for c in results["columns"]):
        raise UserError("results.json: 'columns' must be a non-empty list of names")
    notes = results.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise UserError("results.json: 'notes' (optional) must be a list of strings")
    seen = set()
    for i, cell in enumerate(results["cells"]):
        for key, kind in CELL_FIELDS.items():
            if not isinstance(cell, dict) or not isinstance(cell.get(key), kind) or isinstance(cell.get(key), bool):
                raise UserError(f"results.json: cells[{i}] needs {key!r} ({getattr(kind, '__name__', 'number')})")
        ident = (cell["architecture"], cell["objective"], cell["seed"])
        if ident in seen:
            raise UserError(f"results.json: cell {ident} appears twice")
        seen.add(ident)
        for col, value in cell["metrics"].items():
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                raise UserError(f"results.json: cells[{i}] metric {col!r} must be a number or null")
    return results


def load_results(directory: str) -> dict:
    path = os.path.join(directory, RESULTS)
    try:
        with open(path) as f:
            return validate_results(json.load(f))
    except FileNotFoundError:
        raise UserError(f"{path}: not found (a study run writes it)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:   # DIR is a file, results.json a directory, unreadable, ...
        raise UserError(f"cannot read {path}: {e.strerror or type(e).__name__} (DIR must be a study directory)"
                        ) from None


def write_results(directory: str, results: dict) -> str:
    ensure_dir(directory, "the study directory")
    return atomic_write(os.path.join(directory, RESULTS), jsonio.dumps(validate_results(results), indent=1) + "\n")


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------
def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b with ties: (concordant - discordant) / sqrt((n0 - n1)(n0 - n2)), where
    n0 = n(n-1)/2 pairs and n1, n2 the pairs tied in x, in y (so n0 - n1 = pairs not tied in x).
    A pair tied in either counts as neither concordant nor discordant.  NaN when undefined."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"kendall_tau_b needs two vectors of one length, got {x.shape} and {y.shape}")
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    untied_x, untied_y = np.count_nonzero(sx), np.count_nonzero(sy)
    if untied_x == 0 or untied_y == 0:
        return math.nan
    return float(np.sum(sx * sy) / math.sqrt(untied_x * untied_y))


def _lt(a: float, b: float) -> bool:
    """a < b at 1e-9 resolution (83.28 - 82.81 is exactly 2 x 0.235, and the paper does not bold it)."""
    return round(a, 9) < round(b, 9)


def bold_cells(means: dict, sigma: dict, columns) -> set:
    """{(key, column)} within 2 sigma of the column's best (strictly, as the paper bolds).  Without
    a finite sigma only the best is bold."""
    out = set()
    for col in columns:
        vals = {k: m[col] for k, m in means.items() if math.isfinite(m.get(col, math.nan))}
        if not vals:
            continue
        best, s = max(vals.values()), sigma.get(col, math.nan)
        two = 2 * s if math.isfinite(s) else 0.0
        out |= {(k, col) for k, v in vals.items() if v == best or _lt(best - v, two)}
    return out


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# --------------------------------------------------------------------------------------------------
# The paper's claims, each checked column by column; a claim holds on the majority of the columns
# that have the numbers it needs.
# --------------------------------------------------------------------------------------------------
def _majority(name: str, columns, test) -> dict:
    """test(col) -> (passed: bool | None, detail: str); None = column has no numbers for it."""
    parts = [(col, *test(col)) for col in columns]
    parts = [p for p in parts if p[1] is not None]
    if not parts:
        return {"claim": name, "holds": None, "passed": 0, "of": 0, "detail": "not checked: numbers missing"}
    k = sum(bool(p[1]) for p in parts)
    detail = "; ".join(f"{col} {'✓' if ok else '✗'} {text}" for col, ok, text in parts)
    return {"claim": name, "holds": k > len(parts) / 2, "passed": k, "of": len(parts), "detail": detail}


def check_claims(study_name: str, means: dict, sigma: dict, columns) -> list[dict]:
    """The qualitative claims for this study on {key: {column: mean}} with baseline sigma."""
    def v(key, col):
        x = means.get(key, {}).get(col, math.nan)
        return x if _finite(x) else None

    def s(col):
        x = sigma.get(col, math.nan)
        return x if _finite(x) and x > 0 else None

    claims = []
    glue = "GLUE" if "GLUE" in columns else columns[0]
    ctrl = {c: (v(BASELINE_KEY, c), v(CONTROL_KEY, c), s(c)) for c in columns}
    margin = {c: (b - n) / sd for c, (b, n, sd) in ctrl.items() if None not in (b, n, sd)}
    others = [c for c in margin if c != glue]
    holds = None if glue not in margin else bool(
        margin[glue] > 4 and sum(margin[c] > 4 for c in others) >= len(others) / 2)
    claims.append({"claim": f"pretraining matters: ★ baseline beats no pre-training by > 4σ on {glue} "
                            "and on at least half of the other columns",
                   "holds": holds, "passed": sum(m > 4 for m in margin.values()), "of": len(margin),
                   "detail": "; ".join(f"{c} {'✓' if m > 4 else '✗'} {ctrl[c][0]:.2f} - {ctrl[c][1]:.2f} = "
                                       f"{m:.1f}σ" for c, m in margin.items()) or "not checked: numbers missing"})
    if study_name != "t5_table2":
        return claims
    label = paper.ARCHITECTURE_LABELS
    for arch in label:
        def beats(col, arch=arch):
            d, lm = v((arch, "denoising"), col), v((arch, "lm"), col)
            return (None, "") if None in (d, lm) else (d > lm, f"{d:.2f} vs {lm:.2f}")
        claims.append(_majority(f"denoising beats LM ({label[arch]})", columns, beats))
    table2 = [k for k in means if k != CONTROL_KEY]

    def best(col):
        vals = {k: v(k, col) for k in table2 if v(k, col) is not None}
        b = v(BASELINE_KEY, col)
        if b is None or len(vals) < 2:
            return None, ""
        top = max(vals.values())
        return b == top or _lt(top - b, 2 * (s(col) or 0.0)), f"{b:.2f} vs best {top:.2f}"

    def worst(col):
        vals = {k: v(k, col) for k in table2 if v(k, col) is not None}
        w = v(("language_model", "lm"), col)
        if w is None or len(vals) < 2:
            return None, ""
        return w == min(vals.values()), f"{w:.2f} vs lowest {min(vals.values()):.2f}"

    def shared(col):
        a, b, sd = v(("enc_dec_shared", "denoising"), col), v(BASELINE_KEY, col), s(col)
        if None in (a, b, sd):
            return None, ""
        return _lt(abs(a - b), 2 * sd), f"|{a:.2f} - {b:.2f}| vs 2σ = {2 * sd:.2f}"

    def half(col):
        a, b = v(("enc_dec_6_layers", "denoising"), col), v(BASELINE_KEY, col)
        return (None, "") if None in (a, b) else (a < b, f"{a:.2f} vs {b:.2f}")

    claims.append(_majority("encoder-decoder denoising is best (within 2σ)", columns, best))
    claims.append(_majority("the decoder-only LM (LM objective) is worst", columns, worst))
    claims.append(_majority("shared ≈ encoder-decoder (denoising, within 2σ)", columns, shared))
    claims.append(_majority("half depth (6+6 layers) is worse than encoder-decoder (denoising)", columns, half))
    return claims


# --------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------
def summarize(results: dict) -> dict:
    """Everything the three outputs show, computed from results.json alone."""
    validate_results(results)
    name, columns = results["study"], list(results["columns"])
    study = get_study(name) if name in STUDY_DEFS else None
    paper_rows = dict(study.paper) if study else dict(paper.TABLE1)
    groups: dict[tuple, list] = {}
    for cell in results["cells"]:
        groups.setdefault((cell["architecture"], cell["objective"]), []).append(cell)
    order = [k for k in (study.keys() if study else []) if k in groups]
    order += [k for k in groups if k not in order]
    rows = []
    for key in order:
        cells = sorted(groups[key], key=lambda c: c["seed"])
        scores = {c: np.array([x["metrics"].get(c) if _finite(x["metrics"].get(c)) else np.nan
                               for x in cells], np.float64) for c in columns}
        mean = {c: float(np.nanmean(a)) if np.isfinite(a).any() else math.nan for c, a in scores.items()}
        std = {c: float(np.nanstd(a, ddof=1)) if np.isfinite(a).sum() > 1 else math.nan for c, a in scores.items()}

        def total(field):   # optional per-cell keys, summed over the seeds when every seed has them
            return sum(c[field] for c in cells) if all(_finite(c.get(field)) for c in cells) else None

        rows.append({"key": key, "label": study.label(key) if study else key, "seeds": [c["seed"] for c in cells],
                     "mean": mean, "std": std, "params": cells[0]["params"],
                     "flops_per_token": cells[0]["flops_per_token"], "wall_s": total("wall_s"),
                     "pretrain_flops": total("pretrain_flops"), "paper": paper_rows.get(key),
                     "baseline": key == BASELINE_KEY, "control": key == CONTROL_KEY})
    base = next((r for r in rows if r["baseline"]), None)
    sigma = dict(base["std"]) if base else {c: math.nan for c in columns}
    table = [r for r in rows if not r["control"]]
    ours = {r["key"]: r["mean"] for r in rows}
    theirs = {r["key"]: dict(r["paper"]) for r in rows if r["paper"]}
    paper_sigma = {c: paper.BASELINE_STD.get(c, math.nan) for c in columns}
    tau = {}
    for c in columns:
        pairs = [(r["mean"][c], r["paper"][c]) for r in table
                 if r["paper"] and _finite(r["mean"][c]) and _finite(r["paper"].get(c))]
        tau[c] = (kendall_tau_b(*zip(*pairs)) if len(pairs) >= 2 else math.nan, len(pairs))
    return {"study": name, "title": study.title if study else name, "scale": results["scale"], "columns": columns,
            "rows": rows, "sigma": sigma, "paper_sigma": paper_sigma,
            "bold": bold_cells({r["key"]: r["mean"] for r in table}, sigma, columns),
            "paper_bold": bold_cells({k: m for k, m in theirs.items() if k != CONTROL_KEY}, paper_sigma, columns),
            "tau": tau, "claims": check_claims(name, ours, sigma, columns),
            "paper_claims": check_claims(name, theirs, paper_sigma, columns),
            "cells": results["cells"], "notes": list(results.get("notes", []))}


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------
def _num(x, digits=2) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "–"


def _si(x) -> str:
    if not _finite(x):
        return "–"
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _cell_text(text: str, bold: bool) -> str:
    return f"**{text}**" if bold else text


def render_table_md(s: dict) -> str:
    rows, cols = s["rows"], s["columns"]
    base = next((r for r in rows if r["baseline"]), None)
    lm = next((r for r in rows if r["key"][0] == "language_model"), None)
    P = lm["params"] if lm else (base["params"] / 2 if base else math.nan)   # enc-dec = 2P by convention
    M = base["flops_per_token"] if base else math.nan
    n_seeds = len(base["seeds"]) if base else 0
    out = [f"# {s['study']}: {s['title']}", "",
           f"Scale `{s['scale']}`.  Each score is **ours / the paper's**.  Bold: within 2 baseline standard "
           f"deviations of the column's best, as the paper bolds (ours: σ over our {n_seeds} baseline seeds; "
           f"the paper's: over its {paper.BASELINE_RUNS} runs).  ★ = the baseline, ours as mean ± std over seeds.  "
           "Params in units of P (one L-layer stack with the embeddings), cost as FLOPs per token in units of "
           "M (the baseline encoder-decoder's); the paper's labels in brackets.  The no-pre-training control "
           "is a reference row and takes no part in the bolding.", "",
           "| Architecture | Objective | Params | Cost | " + " | ".join(cols) + " |",
           "|" + "---|" * (4 + len(cols))]
    for r in rows:
        arch, obj = r["label"]
        cost = paper.TABLE2_COST.get(r["key"][0], ("", ""))
        cells = []
        for c in cols:
            ours = _num(r["mean"][c]) + (f" ± {_num(r['std'][c])}" if r["baseline"] and _finite(r["std"][c]) else "")
            theirs = _num((r["paper"] or {}).get(c))
            cells.append(f"{_cell_text(ours, (r['key'], c) in s['bold'])} / "
                         f"{_cell_text(theirs, (r['key'], c) in s['paper_bold'])}")
        star = "★" if r["baseline"] else ""
        obj = f"{obj} (control)" if r["control"] else obj
        out.append(f"| {star}{arch} | {obj} | {r['params'] / P:.2f}P ({cost[0]}) | "
                   f"{r['flops_per_token'] / M:.2f}M ({cost[1]}) | " + " | ".join(cells) + " |")
    out.append("| σ (baseline std) | | | | " + " | ".join(
        f"{_num(s['sigma'][c], 3)} / {_num(s['paper_sigma'][c], 3)}" for c in cols) + " |")
    return "\n".join(out) + "\n"


def render_report_md(s: dict) -> str:
    cols, rows = s["columns"], s["rows"]
    base = next((r for r in rows if r["baseline"]), None)
    ctrl = next((r for r in rows if r["control"]), None)
    out = [f"# Report: {s['study']} at scale `{s['scale']}`", "", s["title"], "",
           "Columns (with the paper's metric): " + "; ".join(
               f"{c}: {paper.COLUMN_METRICS[c]}" if c in paper.COLUMN_METRICS else c for c in cols) + ".", ""]
    head = "| | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1)
    if base:
        out += [f"## ★ Baseline over {len(base['seeds'])} seeds {base['seeds']}", "", head,
                "| ours: mean ± std | " + " | ".join(f"{_num(base['mean'][c])} ± {_num(base['std'][c])}"
                                                    for c in cols) + " |",
                f"| paper: mean ± std ({paper.BASELINE_RUNS} runs) | " + " | ".join(
                    f"{_num(paper.BASELINE.get(c))} ± {_num(s['paper_sigma'][c], 3)}" for c in cols) + " |", ""]
    if base and ctrl:
        def margin(b, n, sd):
            return f"{b - n:+.2f} ({(b - n) / sd:.1f}σ)" if _finite(b) and _finite(n) and _finite(sd) and sd > 0 \
                else "–"
        out += ["## ★ Baseline minus the no-pre-training control, in baseline σ", "", head,
                "| ours | " + " | ".join(margin(base["mean"][c], ctrl["mean"][c], s["sigma"][c]) for c in cols) + " |",
                "| paper | " + " | ".join(margin(paper.BASELINE.get(c, math.nan), paper.NO_PRETRAINING.get(c, math.nan),
                                                s["paper_sigma"][c]) for c in cols) + " |", ""]
    out += ["## Agreement with the paper: Kendall τ-b per column", "",
            "Between our row means and the paper's numbers over the rows both have (the baseline as its "
            "seed mean; the control left out).  τ-b counts ties; 1 = the same order, -1 = reversed.", "",
            "| column | τ-b | rows |", "|---|---|---|"]
    out += [f"| {c} | {_num(s['tau'][c][0])} | {s['tau'][c][1]} |" for c in cols]
    out += ["", "## The paper's claims", "",
            "Each claim is checked column by column and holds when it holds on most columns; "
            "the paper's column applies the same test to the paper's own numbers.", "",
            "| claim | ours | paper |", "|---|---|---|"]
    verdict = lambda c: "not checked" if c["holds"] is None else \
        f"{'✓ holds' if c['holds'] else '✗ fails'} ({c['passed']}/{c['of']})"  # noqa: E731
    for ours, theirs in zip(s["claims"], s["paper_claims"]):
        out.append(f"| {ours['claim']} | {verdict(ours)} | {verdict(theirs)} |")
    out += [""] + [f"- {c['claim']}: {c['detail']}" for c in s["claims"]]
    out += ["", "## Compute per cell", "",
            "| cell | seed | params | FLOPs/token | pretraining FLOPs | wall time |", "|---|---|---|---|---|---|"]
    total = 0.0
    for c in s["cells"]:
        wall = c.get("wall_s")
        total += wall if _finite(wall) else 0.0
        out.append(f"| {c['architecture']} / {c['objective']} | {c['seed']} | {_si(c['params'])} | "
                   f"{_si(c['flops_per_token'])} | {_si(c.get('pretrain_flops'))} | "
                   f"{_num(wall / 60, 1) + ' min' if _finite(wall) else '–'} |")
    if any(_finite(c.get("wall_s")) for c in s["cells"]):
        out += ["", f"Total wall time: {total / 60:.1f} min."]
    if s["notes"]:
        out += ["", "## Notes", ""] + [f"- {n}" for n in s["notes"]]
    return "\n".join(out) + "\n"


def render_png(s: dict) -> bytes:
    """One panel per column: cells as bars coloured by objective (the baseline with its ±std),
    the baseline ±2σ band, the no-pretraining control as a dashed line, bold cells outlined."""
    cols = s["columns"]
    table = [r for r in s["rows"] if not r["control"]]
    ctrl = next((r for r in s["rows"] if r["control"]), None)
    base = next((r for r in table if r["baseline"]), None)
    one_arch = len({r["key"][0] for r in table}) == 1
    # tick = the architecture (colour = objective) when the study varies it, else the objective
    ticks = [("★" if r["baseline"] else "") + r["label"][1 if one_arch else 0] for r in table]
    objectives = {r["key"][1]: r["label"][1] for r in table}
    color = {o: f"C{i % 10}" for i, o in enumerate(objectives)}
    ncols = min(4, max(len(cols), 1))
    nrows = math.ceil(len(cols) / ncols)
    fig = Figure(figsize=(max(4.2 * ncols, 6.0), 3.8 * nrows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    for i, c in enumerate(cols):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        x = np.arange(len(table))
        h = np.array([r["mean"][c] for r in table], np.float64)
        ax.bar(x, np.nan_to_num(h), color=[color[r["key"][1]] for r in table], edgecolor="black", zorder=2,
               linewidth=[2.5 if (r["key"], c) in s["bold"] else 0.0 for r in table])
        ys = [v for v in h if math.isfinite(v)]
        if base and _finite(base["mean"][c]) and _finite(s["sigma"][c]):
            m, sd, j = base["mean"][c], s["sigma"][c], table.index(base)
            ax.errorbar([j], [m], yerr=[sd], color="black", capsize=3, zorder=3)
            ax.axhspan(m - 2 * sd, m + 2 * sd, color="gray", alpha=0.3, zorder=2.5, label="★ baseline ± 2σ")
            ys += [m - 2 * sd, m + 2 * sd]
        if ctrl and _finite(ctrl["mean"][c]):
            ax.axhline(ctrl["mean"][c], color="red", linestyle="--", zorder=3, label="no pre-training")
            ys.append(ctrl["mean"][c])
        if ys:   # zoom on the differences: the bars start below the lowest value shown
            pad = 0.15 * (max(ys) - min(ys)) or 1.0
            ax.set_ylim(min(ys) - pad, max(ys) + pad)
        ax.set_xticks(x, ticks, rotation=55, ha="right", fontsize=7)
        ax.set_title(c)
        if i == 0:
            if not one_arch:
                for o, lab in objectives.items():
                    ax.bar([0], [0], color=color[o], label=lab, width=0)
            ax.legend(fontsize=7, loc="lower left", framealpha=0.9)
    fig.suptitle(f"{s['study']} at scale {s['scale']}\nbars = our cells (outlined: within 2σ of the column's best)",
                 fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def write_report(directory: str, results: dict | None = None) -> list[str]:
    """Regenerate DIR/table.md, DIR/table.png and DIR/report.md from DIR/results.json (or from
    `results`, which is then also written as DIR/results.json).  Returns the paths written."""
    if results is None:
        results = load_results(directory)
        paths = []
    else:
        paths = [write_results(directory, results)]
    s = summarize(results)
    paths.append(atomic_write(os.path.join(directory, "table.md"), render_table_md(s)))
    paths.append(atomic_write(os.path.join(directory, "table.png"), render_png(s)))
    paths.append(atomic_write(os.path.join(directory, "report.md"), render_report_md(s)))
    return paths
