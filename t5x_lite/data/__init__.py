"""Data: vocabularies, sources, preprocessors, feature converters, task/mixture registry, grain pipeline.

  get_vocabulary(spec)                       "builtin" | "byte[:N]" | "spm:PATH[:N]"
  Task, Mixture, Feature, TaskRegistry, MixtureRegistry, get_task_or_mixture
  make_pipeline(name, split=, feature_lengths=, architecture=, batch_size=, seed=, ...) -> Pipeline

The registries start empty: `import t5x_lite.tasks` registers the built-in tasks.  This package imports
neither jax nor the task definitions, so `import t5x_lite.data` stays light.
"""

from t5x_lite.data.vocabularies import (ByteVocabulary, SentencePieceVocabulary, Vocabulary,  # noqa: F401
                                        checkpoint_vocabulary, get_vocabulary, vocabulary_fingerprint)
from t5x_lite.data.preprocessors import ConcatAndSplit, Context, Feature  # noqa: F401
from t5x_lite.data.sources import (BuiltinSource, DataSource, InMemorySource, JsonlSource,  # noqa: F401
                                   TextLineSource, TfdsSource)
from t5x_lite.data.tasks import (Mixture, MixtureRegistry, Task, TaskRegistry,  # noqa: F401
                                 get_task_or_mixture)
from t5x_lite.data.streams import ExampleStream, MixtureStream  # noqa: F401
from t5x_lite.data.pipeline import Pipeline, make_pipeline  # noqa: F401
