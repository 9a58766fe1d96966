"""One exception type for bad user input.

Anything that is the user's fault (a broken config, a missing vocab, a corrupt
checkpoint, an empty dataset, out-of-range token ids, ...) raises `UserError`
with a single-line message.  `t5x_lite.cli` turns it into
``t5x-lite CMD: error: <message>`` on stderr and exit code 2.  Everything else is a
bug and keeps its traceback.

Paths a command creates go through `ensure_dir` (directories) and `check_writable_file`
(output files), so a path that is a file, sits under a file or cannot be written is one line
too, said before any work is done.
"""

import argparse
import errno
import importlib
import os
import re
import sys


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
        # t5x_lite.cli already prints "t5x-lite CMD: error:"; a subcommand's parser ("t5x-lite convert
        # t5x-to-hf") adds only its own name, so the line reads "t5x-lite convert: error: t5x-to-hf: ...".
        words = self.prog.split()
        own = " ".join(words[2:]) if words[:1] == ["t5x-lite"] else self.prog
        raise UserError(f"{own}: {message}" if own else message)


def import_modules(names) -> None:
    """Import user modules that register tasks or mixtures (``--module NAME``,
    T5X's MIXTURE_OR_TASK_MODULE).  A module that cannot be imported is one line."""
    for name in names or ():
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UserError(f"--module {name}: cannot import it ({e}); is it on PYTHONPATH?") from None


def ensure_dir(path: str, what: str) -> str:
    """Create directory `path` (and its parents) that a command writes into, or raise one line saying
    why it cannot: it is a file, one of its parents is a file, or the place is not writable.
    `what` names it in the message, e.g. "--workdir".  Returns `path`."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{what} {path} exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {what} {path}: {_why(path, e)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into {what} {path}: permission denied")
    return path


def check_writable_file(path: str, what: str) -> str:
    """Check (before any work is done) that output file `path` can be written: it is not a directory
    and its directory exists or can be created (it is created).  One-line UserError otherwise."""
    if os.path.isdir(path):
        raise UserError(f"{what} {path} is a directory (give a file name)")
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise UserError(f"cannot write {what} {path}: {parent} is a file, not a directory")
    ensure_dir(parent, f"the directory of {what}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UserError(f"cannot write {what} {path}: permission denied")
    return path


def _why(path: str, e: OSError) -> str:
    """The reason of a failed makedirs, naming the ancestor that is a file when there is one."""
    if isinstance(e, (NotADirectoryError, FileExistsError)) or e.errno in (errno.ENOTDIR, errno.EEXIST):
        parent = os.path.dirname(os.path.abspath(path))
        while parent and parent != os.path.dirname(parent):
            if os.path.exists(parent) and not os.path.isdir(parent):
                return f"{parent} is a file, not a directory"
            parent = os.path.dirname(parent)
    return e.strerror or type(e).__name__


# ----------------------------------------------------------------------------
# Multi-process: another process of the run died (one line, exit 6)
# ----------------------------------------------------------------------------

PEER_LOST_EXIT_CODE = 6           # SIGABRT's number: JAX aborts a process whose peer died (made a plain exit)
_PEER_LOST = "lost contact with another process of this run"
_RERUN = "rerun the same command on every process to resume from the last checkpoint"


def _peer_lost_line(why: str) -> str:
    return f"t5x-lite train: error: {_PEER_LOST} ({why}); {_RERUN}"


def peer_lost(why: str):
    """End this process now with one line: a peer died.  os._exit, because a normal exit would wait in
    JAX's shutdown barrier (and Orbax's) for the dead peer."""
    try:
        sys.stderr.flush()
    finally:
        os.write(2, (_peer_lost_line(why) + "\n").encode())
        os._exit(PEER_LOST_EXIT_CODE)


def peer_failure(e: BaseException) -> str | None:
    """A short reason if `e` (or its cause) is a multi-process collective or barrier that failed because
    another process is gone; None for any other error."""
    import jax
    if jax.process_count() == 1:
        return None
    while e is not None:
        msg = str(e).strip().split("\n")[0]
        if isinstance(e, jax.errors.JaxRuntimeError) and re.search(
                r"Gloo|NCCL|[Pp]eer|heartbeat|[Bb]arrier|UNAVAILABLE|[Cc]oordination|Socket closed|Connection", msg):
            return re.sub(r"\[[^\]]*\.cc:\d+\] ", "", msg)[:200]
        e = e.__cause__ or e.__context__
    return None
