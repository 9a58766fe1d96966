"""T5 ablation studies (Raffel et al. 2020, Tables 2 and 4-7): named grids of cells.

    paper.py     the paper's numbers as data (Tables 1, 2, 4-7, the baseline's std)
    studies.py   Study / Cell / Recipe, the built-in studies, cell -> model + task (cell_plan), budget()
    report.py    results.json -> table.md, table.png, report.md (mean +- std, bold, Kendall tau, claims)
    scales.py    smoke / cpu / gpu / paper: base model, pretraining Recipe, fine-tuning settings, seeds
    stages.py    a cell's stage directories and configs, task variants, DONE.json, exact-resume repair
    runner.py    run_study(): every stage through train(), one progress bar, results.json + report
    cli.py       `t5x-lite study list | run STUDY --scale S --workdir DIR | report DIR`

Importing this package imports nothing heavy; the submodules import what they need.
"""
