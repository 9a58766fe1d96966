"""Predicted wall time and chip-hours of the paper-scale runs (docs/scaling.md), from the analytic
FLOP counter (t5x_lite/models/flops.py, the study budget of t5x_lite/study/studies.py) and the
per-chip datasheet peaks of t5x_lite/train/metrics.py at a stated MFU.  Every figure here is
PREDICTED (no step was run on the chips).

    python tools/scaling_plan.py [--mfu 0.4]
"""

from __future__ import annotations

import argparse

from t5x_lite.models import ModelConfig, flops_per_step
from t5x_lite.study import scales, studies
from t5x_lite.train.metrics import peak_flops_per_device

SLICES = {"v4-32 (16 TPU v4 chips)": ("tpu v4", 16), "8 x H100": ("h100", 8)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mfu", type=float, default=0.40)
    mfu = p.parse_args().mfu
    paper = scales.PAPER
    base: ModelConfig = paper.model
    steps, batch = paper.recipe.pretrain_steps, paper.recipe.batch_size

    # T5.1.0-base (configs/t5_1_0_base.py): inputs 512 / targets 114, batch 128, 2^19 steps
    step_flops = flops_per_step(base, batch, 512, 114)
    print(f"T5.1.0-base: {step_flops:.3e} FLOPs per step (batch {batch}, inputs 512 / targets 114), "
          f"{steps} steps = {step_flops * steps:.3e} FLOPs")
    for name, (key, n) in SLICES.items():
        s = step_flops / (n * peak_flops_per_device(key) * mfu)
        print(f"  {name} at {mfu:.0%} MFU: {s * 1e3:.1f} ms/step, {s * steps / 3600:.1f} h wall, "
              f"{s * steps * n / 3600:.0f} chip-hours (predicted)")

    # Table 2 at paper scale: every cell pretrained on 2^35 tokens, then fine-tuned per task
    study = studies.get_study("t5_table2")
    tokens = paper.recipe.pretrain_tokens
    ft = paper.finetune
    ft_tokens = ft.steps * ft.batch_size * paper.recipe.sequence_length
    total = 0.0
    print(f"Table 2 (t5_table2: {len(study.cells)} cells incl. seeds), pretraining {tokens:.3e} tokens per cell, "
          f"fine-tuning {ft.steps} steps x {ft.batch_size} x {paper.recipe.sequence_length} on each of "
          f"{len(ft.tasks())} tasks")
    for cell in study.cells:
        b = studies.budget(cell, base, tokens, paper.recipe.sequence_length)
        flops = b["pretrain_flops"] + len(ft.tasks()) * ft_tokens * b["flops_per_token"]
        total += flops
        print(f"  {cell.architecture:17s} {cell.objective or 'control':10s} seed {cell.seed}: {b['params'] / 1e6:6.1f}M "
              f"params, {flops:.3e} FLOPs (pretrain {b['pretrain_flops']:.3e})")
    print(f"  total {total:.3e} FLOPs")
    for name, (key, n) in SLICES.items():
        chip_h = total / (peak_flops_per_device(key) * mfu) / 3600
        print(f"  on {name} at {mfu:.0%} MFU: {chip_h:,.0f} chip-hours, {chip_h / n / 24:.1f} days of the slice "
              "(predicted)")


if __name__ == "__main__":
    main()
