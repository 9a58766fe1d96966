"""One exception type for bad user input.

Anything that is the user's fault (a broken config, a missing vocab, a corrupt
checkpoint, an empty dataset, out-of-range token ids, ...) raises `UserError`
with a single-line message.  `t5x_lite.cli` turns it into
``t5x-lite: error: <message>`` on stderr and exit code 2.  Everything else is a
bug and keeps its traceback.
"""

import argparse
import importlib


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep the message to one line so it reads well as a CLI error.
        super().__init__(" ".join(str(message).split()))


class ArgParser(argparse.ArgumentParser):
    """The one argument parser of every `t5x-lite` subcommand: a usage error is
    one line (``t5x-lite CMD: error: ...``) and exit code 2, never a usage block."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def import_modules(names) -> None:
    """Import user modules that register tasks or mixtures (``--module NAME``,
    T5X's MIXTURE_OR_TASK_MODULE).  A module that cannot be imported is one line."""
    for name in names or ():
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UserError(f"--module {name}: cannot import it ({e}); is it on PYTHONPATH?") from None
