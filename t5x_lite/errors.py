"""One exception type for bad user input.

Anything that is the user's fault (a broken config, a missing vocab, a corrupt
checkpoint, an empty dataset, out-of-range token ids, ...) raises `UserError`
with a single-line message.  `t5x_lite.cli` turns it into
``t5x-lite: error: <message>`` on stderr and exit code 2.  Everything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep the message to one line so it reads well as a CLI error.
        super().__init__(" ".join(str(message).split()))
