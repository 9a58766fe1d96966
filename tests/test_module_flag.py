"""A task defined in the user's own file works everywhere: `--module NAME` (T5X's
MIXTURE_OR_TASK_MODULE) on data, train, eval, infer and score.  And the shared parser: a usage
error of any subcommand is one stderr line with exit code 2.

The module is written to tmp_path and found through PYTHONPATH; every command runs in its own
process, so each import is real, and the module appends the subcommand it was imported by to a
marker file.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from train_helpers import REPO, TINY_MODEL, jax_cache_env

MODULE = "c2_user_tasks"
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]

USER_MODULE = textwrap.dedent('''
    """Registers the text-to-text task "user_copy" (what a user's own tasks file looks like)."""
    import os
    import sys

    from t5x_lite.data import Feature, InMemorySource, Task, TaskRegistry, get_vocabulary
    from t5x_lite.data import preprocessors as pp
    from t5x_lite.tasks import metrics

    ROWS = [{"inputs": "copy: " + w, "targets": w} for w in %r]
    VOCAB = get_vocabulary("builtin")
    TaskRegistry.add(Task("user_copy", InMemorySource({"train": ROWS, "validation": ROWS}),
                          [pp.tokenize, pp.append_eos], {"inputs": Feature(VOCAB), "targets": Feature(VOCAB)},
                          metric_fns=[metrics.sequence_accuracy]))
    with open(os.environ["USER_TASKS_MARKER"], "a") as f:
        f.write(sys.argv[1] + "\\n")
''' % (WORDS,))


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_module")
    (root / f"{MODULE}.py").write_text(USER_MODULE)
    env = jax_cache_env(dict(os.environ))
    env["PYTHONPATH"] = os.pathsep.join([str(root), REPO] + [p for p in [env.get("PYTHONPATH")] if p])
    env["USER_TASKS_MARKER"] = str(root / "imported_by.txt")
    env["JAX_NUM_CPU_DEVICES"] = "1"     # one CPU device is all these runs need

    def run(*args, timeout=600):
        return subprocess.run([sys.executable, "-m", "t5x_lite.cli", *args], cwd=str(root), env=env,
                              capture_output=True, text=True, timeout=timeout)

    def imported_by():
        return open(env["USER_TASKS_MARKER"]).read().split()

    return root, run, imported_by


@pytest.fixture(scope="module")
def trained(user):
    """`t5x-lite train --module ...` on the user's task, 2 steps."""
    root, run, imported_by = user
    workdir = str(root / "workdir")
    proc = run("train", "--module", MODULE, "--workdir", workdir, *TINY_MODEL,
               "--config.data.task=user_copy", "--config.data.batch_size=4", "--config.train.num_steps=2",
               "--config.train.checkpoint_every=2", "--config.train.eval_every=0",
               "--config.train.log_every=1", "--config.train.async_checkpointing=False")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
    assert "train" in imported_by()
    return workdir


def _one_error_line(proc, prefix):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(prefix), lines
    return lines[0]


def test_data_inspect_shows_the_user_task(user):
    root, run, imported_by = user
    proc = run("data", "inspect", "--module", MODULE, "--task", "user_copy", "--num", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "copy: alpha" in proc.stdout and "copy: beta" in proc.stdout
    assert "data" in imported_by()
    assert "user_copy" in _one_error_line(run("data", "inspect", "--task", "user_copy"), "t5x-lite data: error:")


@pytest.mark.slow
def test_eval_infer_score_with_the_user_task(user, trained, tmp_path):
    root, run, imported_by = user
    out = tmp_path / "eval"
    proc = run("eval", "--module", MODULE, "--checkpoint", trained, "--task", "user_copy", "--output", str(out),
               "--max-decode-length", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.load(open(out / "user_copy" / "metrics.json"))
    assert metrics["num_examples"] == len(WORDS) and metrics["step"] == 2 and "sequence_accuracy" in metrics
    preds = [json.loads(line) for line in open(out / "user_copy" / "predictions.jsonl")]
    assert [p["inputs"] for p in preds] == [f"copy: {w}" for w in WORDS]
    # Without the module the task does not exist: one line.
    assert "user_copy" in _one_error_line(
        run("eval", "--checkpoint", trained, "--task", "user_copy", "--output", str(out)), "t5x-lite eval: error:")

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"inputs": f"copy: {w}", "targets": w}) + "\n" for w in WORDS[:2]))
    proc = run("infer", "--module", MODULE, "--checkpoint", trained, "--input", str(src),
               "--output", str(tmp_path / "infer.jsonl"), "--max-decode-length", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len((tmp_path / "infer.jsonl").read_text().splitlines()) == 2
    proc = run("score", "--module", MODULE, "--checkpoint", trained, "--input", str(src),
               "--output", str(tmp_path / "score.jsonl"), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = [json.loads(line) for line in open(tmp_path / "score.jsonl")]
    assert len(scored) == 2 and all(r["log_likelihood"] < 0 for r in scored)
    assert {"eval", "infer", "score"} <= set(imported_by())
    # A module that cannot be imported is one line too.
    assert "no_such_user_module" in _one_error_line(
        run("score", "--module", "no_such_user_module", "--checkpoint", trained, "--input", str(src),
            "--output", str(tmp_path / "x.jsonl")), "t5x-lite score: error:")


@pytest.mark.parametrize("argv", [["score", "--bogus"], ["convert"], ["convert", "t5x-to-hf"],
                                  ["eval", "--bogus"], ["infer", "--checkpoint"]])
def test_usage_errors_are_one_line(user, argv):
    _, run, _ = user
    _one_error_line(run(*argv, timeout=120), f"t5x-lite {argv[0]}: error:")
