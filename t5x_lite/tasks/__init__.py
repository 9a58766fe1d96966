"""Task definitions: the built-in tasks, T5's downstream tasks and the local stand-ins, with their
metrics and postprocessors.

`import t5x_lite.tasks` registers every built-in task and mixture in t5x_lite.data's registries:
  builtin.py         pre-training tasks on the shipped corpus and on TFDS C4
  bert.py            builtin_bert: BERT's MLM + next-sentence pairs on the shipped corpus
  downstream.py      GLUE, SuperGLUE, CNN/DM, SQuAD, WMT under T5's names (TFDS sources)
  local.py           the local stand-ins that `t5x-lite data build-local` builds
  metrics.py         T5's metrics, (targets, predictions) -> {name: score}
  postprocessors.py  decoded text -> the value a metric compares
A task of your own: register it in a module of yours and pass `--module NAME` to the CLIs.
"""

from t5x_lite.tasks import bert, builtin, downstream, local  # noqa: F401  (importing them registers the tasks)
