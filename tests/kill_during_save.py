"""`python tests/kill_during_save.py STEP train ARGS...`: run `t5x-lite train ARGS`, but SIGKILL the
process right after the (async) save of step STEP has started, i.e. while that checkpoint is being
written.  Fault injection for tests/test_train_resume.py; it lives here, not in the trainer."""

import os
import signal
import sys

from t5x_lite import checkpoints
from t5x_lite.cli import main

KILL_AT = int(sys.argv[1])
_save = checkpoints.TrainCheckpointer.save


def _save_then_die(self, step, *args, **kwargs):
    out = _save(self, step, *args, **kwargs)
    if int(step) == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return out


checkpoints.TrainCheckpointer.save = _save_then_die
sys.exit(main(sys.argv[2:]))
