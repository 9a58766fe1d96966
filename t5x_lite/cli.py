"""The one `t5x-lite` command.

Each subcommand lives in the module that owns it; this file only dispatches, so
`t5x-lite --help` stays fast (no JAX import) and each owner keeps its own
argument parser.  Bad input anywhere raises `t5x_lite.errors.UserError`, which
is printed here as one line with exit code 2.
"""

from __future__ import annotations

import difflib
import importlib
import sys

from t5x_lite import __version__
from t5x_lite.errors import UserError

# name -> (module, function, one-line help).  Each function takes argv (the
# arguments after the subcommand) and returns an exit code (or None for 0).
SUBCOMMANDS = {
    "train": ("t5x_lite.train.main", "main",
              "pretrain or fine-tune (ml_collections --config / --config.KEY=VALUE, or --gin_file)"),
    "data": ("t5x_lite.data.cli", "main",
             "list tasks/mixtures, inspect preprocessed examples, build local downstream datasets"),
    "vocab": ("t5x_lite.data.cli", "vocab_main",
              "train a SentencePiece vocabulary (unigram or bpe)"),
    "convert": ("t5x_lite.convert", "main",
                "convert checkpoints: hf-to-t5x, t5x-to-hf"),
    "score": ("t5x_lite.scoring", "main",
              "log-likelihood of targets given inputs, from a checkpoint (JSONL in, JSONL out)"),
    "eval": ("t5x_lite.evaluation.cli", "eval_main",
             "decode a task's split with a checkpoint and compute the task's metrics"),
    "infer": ("t5x_lite.evaluation.cli", "infer_main",
              "free-form generation from a checkpoint (greedy, beam or sampling)"),
    "plot": ("t5x_lite.plot", "main",
             "PNG of train loss, learning rate and eval metrics against step (several workdirs overlaid)"),
    "study": ("t5x_lite.study.cli", "main",
              "T5 ablation studies (Tables 2, 4-7): list the built-in studies, report a study directory"),
}

USAGE = "usage: t5x-lite <command> [options]   (t5x-lite <command> --help for details)"


def _print_help(stream=sys.stdout) -> None:
    print(USAGE, file=stream)
    print("\nT5-family pretraining, fine-tuning and evaluation in JAX/Flax NNX.\n", file=stream)
    print("commands:", file=stream)
    width = max(len(n) for n in SUBCOMMANDS)
    for name, (_, _, helptext) in SUBCOMMANDS.items():
        print(f"  {name:<{width}}  {helptext}", file=stream)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        _print_help()
        return 0
    if argv[0] == "--version":
        print(f"t5x-lite {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        close = difflib.get_close_matches(name, SUBCOMMANDS, n=3)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        print(f"t5x-lite: error: unknown command {name!r}{hint}; commands: {', '.join(SUBCOMMANDS)}",
              file=sys.stderr)
        return UserError.exit_code
    module_name, func_name, _ = SUBCOMMANDS[name]
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        code = func(rest)
    except UserError as e:
        print(f"t5x-lite {name}: error: {e}", file=sys.stderr)
        return e.exit_code   # 2; a subclass may say otherwise (train --compile-only: 3 = does not fit)
    except KeyboardInterrupt:
        print(f"t5x-lite {name}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
