"""One unit for every accuracy: percent.  The steps compute per-token accuracies as fractions;
`as_logged` is where rows are written (train rows in TrainLogger, eval rows in loop._evaluate)."""

import math

from t5x_lite.train.metrics import as_logged


def test_token_accuracy_is_renamed_and_in_percent():
    row = as_logged({"loss": 2.5, "accuracy": 0.25, "grad_norm": 3.0, "learning_rate": 0.01})
    assert row == {"loss": 2.5, "token_accuracy": 25.0, "grad_norm": 3.0, "learning_rate": 0.01}


def test_eval_prefix_and_aux_accuracies():
    row = as_logged({"loss": 1.0, "accuracy": 0.5, "nsp_accuracy": 0.75, "nsp_loss": 0.6}, prefix="eval/")
    assert row == {"eval/loss": 1.0, "eval/token_accuracy": 50.0, "eval/nsp_accuracy": 75.0, "eval/nsp_loss": 0.6}


def test_nonfinite_and_missing_values_pass_through():
    row = as_logged({"accuracy": float("nan"), "mfu": None})
    assert math.isnan(row["token_accuracy"]) and row["mfu"] is None
