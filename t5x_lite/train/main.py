"""`t5x-lite train`: pretrain or fine-tune.

    t5x-lite train [--config configs/NAME.py[:ARG]] --workdir DIR [--config.KEY=VALUE ...]
                   [--gin_file FILE.gin ...] [--gin_bindings 'KEY = VALUE' ...] [--module NAME ...]
                   [--coordinator_address HOST:PORT --num_processes N --process_id I]
                   [--heartbeat_timeout_seconds S]
    t5x-lite train [--config ...] --compile-only [--target KIND:N] [--memory_budget_gb G]

Without --config the embedded default (t5x_lite/train/default_config.py, which
declares every key with its default) is trained.  Order of precedence: the config
file, then gin files and bindings, then --config.KEY=VALUE overrides.  Running the
same command again resumes from DIR's latest checkpoint.
"""

from __future__ import annotations

import difflib
import os
import sys
import types

import ml_collections
from absl import flags
from ml_collections import config_flags

from t5x_lite import errors, partitioning
from t5x_lite.errors import UserError
from t5x_lite.train import default_config

HELP = __doc__ + """
flags:
  --config PATH[:ARG]      ml_collections config file with get_config() (default: the tiny default)
  --config.KEY=VALUE       override any config key, e.g. --config.train.num_steps=1000
  --workdir DIR            checkpoints, metrics.jsonl, TensorBoard events (required; gin MODEL_DIR too)
  --gin_file FILE          gin file (repeatable), e.g. gin/t5_1_1/small.gin; T5X's names work too
  --gin_bindings 'K = V'   one gin binding (repeatable), e.g. 'train.num_steps = 100' or 'TRAIN_STEPS = 100'
  --module NAME            import a module that registers tasks/mixtures (repeatable; T5X's
                           MIXTURE_OR_TASK_MODULE)
  --coordinator_address, --num_processes, --process_id
                           multi-host (jax.distributed); auto-detected on TPU pods / Slurm / Open MPI
  --heartbeat_timeout_seconds S
                           multi-host: a process that dies is noticed by the others after S seconds
                           (default 30); they exit with one line (docs/training.md, "Resume, faults")
  --print_config           print the config and exit
  --no-progress            no progress bar (it goes to stderr)
  --compile-only           compile the train and eval steps for the mesh without initialising or
                           training: memory per device, collectives, FLOPs, predicted step time;
                           exit 0 if it fits, 3 if not (t5x_lite/train/compile_only.py; no --workdir)
  --target KIND:N          with --compile-only: cpu:N (N emulated CPU devices), tpu-v4:N, tpu-v5e:N,
                           tpu-v5p:N, tpu-v6e:N, h100:N, h200:N (memory checked against that chip's HBM)
  --memory_budget_gb G     with --compile-only: the memory budget per device instead of the target's
  -h, --help               this help

config keys, defaults and meanings: t5x_lite/train/default_config.py (docs/training.md)
"""

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.py")


def parse_args(argv: list[str]):
    """argv -> (config ConfigDict, options namespace).  Every parse problem is a one-line UserError."""
    argv = list(argv)
    _check_config_file(argv)
    fv = flags.FlagValues()
    try:
        config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "experiment config file", flag_values=fv,
                                        lock_config=True, sys_argv=["t5x-lite train"] + argv)
        flags.DEFINE_string("workdir", None, "output directory", flag_values=fv)
        flags.DEFINE_multi_string("gin_file", [], "gin file(s)", flag_values=fv)
        flags.DEFINE_multi_string("gin_bindings", [], "gin binding(s)", flag_values=fv)
        flags.DEFINE_multi_string("module", [], "module(s) registering tasks", flag_values=fv)
        flags.DEFINE_string("coordinator_address", None, "multi-host coordinator HOST:PORT", flag_values=fv)
        flags.DEFINE_integer("num_processes", None, "multi-host: number of processes", flag_values=fv)
        flags.DEFINE_integer("process_id", None, "multi-host: this process's id", flag_values=fv)
        flags.DEFINE_integer("heartbeat_timeout_seconds", partitioning.DEFAULT_HEARTBEAT_TIMEOUT_S,
                             "multi-host: seconds until a dead process is noticed", flag_values=fv)
        flags.DEFINE_boolean("print_config", False, "print the config and exit", flag_values=fv)
        flags.DEFINE_boolean("no-progress", False, "no progress bar", flag_values=fv)
        flags.DEFINE_boolean("compile-only", False, "compile for the mesh and report; no training", flag_values=fv)
        flags.DEFINE_string("target", None, "--compile-only: KIND:N, e.g. tpu-v4:16", flag_values=fv)
        flags.DEFINE_float("memory_budget_gb", None, "--compile-only: GiB per device", flag_values=fv)
        rest = fv(["t5x-lite train"] + argv)
        config = fv.config
        if not isinstance(config, ml_collections.ConfigDict):  # a failed load hides in an _ErrorConfig
            config.to_dict()  # raises the load error
            raise UserError(f"--config did not load a ConfigDict (got {type(config).__name__})")
    except UserError:
        raise
    except BaseException as e:  # absl/ml_collections raise many types, some multi-line
        raise UserError(f"bad flag or config: {_one_line(e, argv)}") from None
    if len(rest) > 1:
        raise UserError(f"unexpected positional arguments: {' '.join(rest[1:])}")
    opts = types.SimpleNamespace(workdir=fv.workdir, modules=list(fv.module), notes=[],
                                 print_config=fv.print_config, coordinator_address=fv.coordinator_address,
                                 num_processes=fv.num_processes, process_id=fv.process_id,
                                 heartbeat_timeout_s=fv.heartbeat_timeout_seconds,
                                 compile_only=fv["compile-only"].value, target=fv.target,
                                 memory_budget_gb=fv.memory_budget_gb, no_progress=fv["no-progress"].value)
    if (opts.target or opts.memory_budget_gb is not None) and not opts.compile_only:
        raise UserError("--target and --memory_budget_gb go with --compile-only")
    if fv.gin_file or fv.gin_bindings:
        from t5x_lite.train import config as config_lib  # lazy: keeps `t5x-lite train --help` fast (no jax)
        gin = config_lib.apply_gin(config, fv.gin_file, fv.gin_bindings)
        opts.modules += gin.modules
        opts.notes += gin.notes
        opts.workdir = opts.workdir or gin.model_dir
        # Gin values go under the command-line overrides: re-apply those afterwards.
        config = _reapply_overrides(config, argv)
    return config, opts


def _check_config_file(argv) -> None:
    """--config PATH[:ARG] must name a file; say so in one line (ml_collections' message is a paragraph)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            continue
        path = value if os.path.isfile(value) else value.split(":", 1)[0]
        if not os.path.isfile(path):
            raise UserError(f"--config {path}: {'is a directory' if os.path.isdir(path) else 'no such file'} "
                            "(a Python file with get_config(), e.g. configs/t5_1_1.py)")


def _unknown_override_key(argv) -> str | None:
    """Name the first --config.KEY override that train/default_config.py does not declare,
    with close matches, so the error says what to fix."""
    known = default_config.get_config()
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config."):].split("=", 1)[0]
        node = known
        for i, part in enumerate(path.split(".")):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                prefix = ".".join(path.split(".")[:i])
                close = difflib.get_close_matches(part, keys, n=3)
                hint = f" (did you mean {', '.join((prefix + '.' if prefix else '') + c for c in close)}?)" if close else ""
                return f"unknown config key {path!r}{hint}"
            node = node[part]
    return None


def _one_line(e: BaseException, argv=()) -> str:
    if isinstance(e, (AttributeError, KeyError)):
        unknown = _unknown_override_key(argv)
        if unknown:
            return unknown
    msg = str(e).strip()
    if len(msg) > 1 and msg[0] == msg[-1] and msg[0] in "'\"":   # a KeyError's repr-quoted message
        msg = msg[1:-1]
    msg = msg.replace("\\n", " ").replace('\\"', '"').replace("\\'", "'")
    return f"{type(e).__name__}: {' '.join(msg.split())}"


def _reapply_overrides(config, argv):
    overrides = _override_args(argv)
    if not overrides:
        return config
    fv = flags.FlagValues()
    try:
        config_flags.DEFINE_config_dict("config", config, "config", flag_values=fv, lock_config=True,
                                        sys_argv=["t5x-lite train"] + overrides)
        fv(["t5x-lite train"] + overrides)
        return fv.config
    except BaseException as e:
        raise UserError(f"bad flag or config: {_one_line(e, argv)}") from None


def _override_args(argv):
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--config."):
            out.append(a)
            if "=" not in a and i + 1 < len(argv):
                out.append(argv[i + 1])
                i += 1
        i += 1
    return out


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv):
        print(HELP)
        return 0
    config, opts = parse_args(argv)
    for note in opts.notes:
        print(f"[t5x-lite train] {note}", file=sys.stderr)
    if opts.print_config:
        from t5x_lite.train import config as config_lib  # lazy: keeps `t5x-lite train --help` fast (no jax)
        config_lib.validate(config)
        print(config)
        return 0
    if opts.compile_only:
        errors.import_modules(opts.modules)
        from t5x_lite.train import compile_only  # lazy: keeps `t5x-lite train --help` fast (no jax)
        return compile_only.run(config, opts.target, opts.memory_budget_gb, argv)
    if not opts.workdir:
        raise UserError("--workdir is required (where checkpoints and metrics go)")
    errors.ensure_dir(opts.workdir, "--workdir")   # before any work: a file or unwritable place is one line
    errors.import_modules(opts.modules)  # before the loop looks up config.data.task
    partitioning.maybe_initialize_distributed(opts.coordinator_address, opts.num_processes, opts.process_id,
                                              opts.heartbeat_timeout_s)
    from t5x_lite.train.loop import train  # lazy: keeps `t5x-lite train --help` fast (no jax)
    return train(config, opts.workdir, show_progress=not opts.no_progress)


if __name__ == "__main__":
    from t5x_lite.cli import main as cli_main
    sys.exit(cli_main(["train"] + sys.argv[1:]))
