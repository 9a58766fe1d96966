"""`t5x-lite study`: the T5 ablation studies.

    t5x-lite study list [STUDY] [--seeds N]   the built-in studies and their cells
    t5x-lite study run STUDY --scale SCALE --workdir DIR [--cells NAME ...] [--seeds N]
                                              pretrain, fine-tune and evaluate the cells (resumable),
                                              then DIR/results.json, table.md, table.png, report.md
    t5x-lite study report DIR                 regenerate DIR/table.md, table.png, report.md
                                              from DIR/results.json
"""

from __future__ import annotations

import math

from t5x_lite.errors import ArgParser
from t5x_lite.study import report, scales, studies


def _parser() -> ArgParser:
    p = ArgParser(prog="t5x-lite study", description="T5 ablation studies (Raffel et al. 2020, Tables 2, 4-7)")
    sub = p.add_subparsers(dest="command", required=True, metavar="{list,run,report}", parser_class=ArgParser)
    ls = sub.add_parser("list", help="the built-in studies and their cells")
    ls.add_argument("study", nargs="?", choices=studies.study_names(), help="show only this study")
    ls.add_argument("--seeds", type=int, default=studies.DEFAULT_SEEDS,
                    help="seeds of the baseline cell (default %(default)s)")
    run = sub.add_parser("run", help="run (or resume) a study's cells, then write results.json and the report")
    run.add_argument("study", choices=studies.study_names(), help="a built-in study (t5x-lite study list)")
    run.add_argument("--scale", required=True, choices=scales.scale_names(),
                     help="model size and budget: " + "; ".join(f"{n}: {s.description}"
                                                              for n, s in scales.SCALES.items()))
    run.add_argument("--workdir", required=True, metavar="DIR", help="the study's directory (rerun to resume)")
    run.add_argument("--cells", nargs="+", metavar="NAME", help="only these cells (names from `study list`)")
    run.add_argument("--seeds", type=int, default=None,
                     help="seeds of the baseline cell (default: the scale's)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    rep = sub.add_parser("report", help="regenerate table.md, table.png and report.md from DIR/results.json")
    rep.add_argument("dir", metavar="DIR", help="a study's work directory")
    return p


def list_studies(names, seeds: int) -> str:
    lines = []
    for name in names:
        study = studies.get_study(name, seeds=seeds)
        lines.append(f"{name}: {study.title} ({len(study.cells)} cells)")
        for cell in study.cells:
            objective = studies.resolve_objective(cell.objective, cell.architecture)
            task = studies.OBJECTIVES[objective].builtin_task if objective else "(fine-tuned from scratch)"
            mark = " ★" if cell.key == study.baseline else ""
            lines.append(f"  {cell.name:<36} {' / '.join(study.label(cell.key))}{mark}   {task}")
    sources = ", ".join(f"{n}: {s.recipe.source}" for n, s in scales.SCALES.items())
    lines.append(f"(the last column is each objective's task on the shipped corpus; `run` pretrains on its scale's "
                 f"text ({sources}; local = the corpus of `t5x-lite data build-local`, c4 = C4 en from the user's files as "
                 f"T5 read it), named in the report)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        print(list_studies([args.study] if args.study else studies.study_names(), args.seeds))
        return 0
    if args.command == "run":
        from t5x_lite.study import runner  # lazy: JAX and the trainer, only for `run` (keeps --help fast)
        results = runner.run_study(args.study, args.scale, args.workdir, cells=args.cells, seeds=args.seeds,
                                   progress=not args.no_progress)
        print(f"wrote {args.workdir}/results.json ({len(results['cells'])} cells)"
              + (", table.md, table.png, report.md" if results["cells"] else ""))
        return 0
    paths = report.write_report(args.dir)
    summary = report.summarize(report.load_results(args.dir))
    taus = ", ".join(f"{c} {t:.2f}" for c, (t, n) in summary["tau"].items() if math.isfinite(t))
    print(f"wrote {', '.join(paths)}")
    print(f"Kendall tau vs the paper: {taus or 'n/a'}")
    held = [c for c in summary["claims"] if c["holds"] is not None]
    print(f"claims holding: {sum(c['holds'] for c in held)}/{len(held)}")
    return 0
