"""T5 ablation studies (Raffel et al. 2020, Tables 2 and 4-7): named grids of cells.

    paper.py     the paper's numbers as data (Tables 1, 2, 4-7, the baseline's std)
    studies.py   Study / Cell / Recipe, the built-in studies, cell -> model + task (cell_plan), budget()
    report.py    results.json -> table.md, table.png, report.md (mean +- std, bold, Kendall tau, claims)
    cli.py       `t5x-lite study list | report DIR`

Importing this package imports nothing heavy; the submodules import what they need.
"""
