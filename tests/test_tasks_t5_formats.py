"""T5's downstream task formats on tiny TFDS datasets built locally (array_record, tmp data_dir).

Each dataset uses the REAL feature spec of its TFDS dataset (names, dtypes, label classes, version;
copied from tensorflow_datasets' glue.py, super_glue.py, cnn_dailymail.py, squad and wmt builders),
so the task reads exactly what a user's prepared TFDS data would give it.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

import t5x_lite.tasks  # noqa: F401  (registers T5's task names)
from t5x_lite.builders.local import write_tfds
from t5x_lite.data import TaskRegistry

F = tfds.features
T = F.Text
I32 = np.int32


def _glue(label_names, **text):
    return F.FeaturesDict({**{k: T() for k in text}, "label": F.ClassLabel(names=list(label_names)),
                           "idx": F.Scalar(dtype=I32)})


WSC_TEXT = "The city councilmen refused the demonstrators a permit because they feared violence."

# task, (tfds name, config, version), features, {split: rows}, split read, inputs, targets, postprocessed target
CASES = [
    ("glue_cola_v002", ("glue", "cola", "2.0.0"), _glue(["unacceptable", "acceptable"], sentence=1),
     {"train": [{"sentence": "John ate.", "label": 1, "idx": 0}],
      "validation": [{"sentence": "Ate John the.", "label": 0, "idx": 1}]},
     "validation", "cola sentence: Ate John the.", "unacceptable", 0),
    ("glue_mnli_v002", ("glue", "mnli", "2.0.0"),
     _glue(["entailment", "neutral", "contradiction"], premise=1, hypothesis=1),
     {"train": [{"premise": "p", "hypothesis": "h", "label": 1, "idx": 0}],
      "validation_matched": [{"premise": "A man is sleeping.", "hypothesis": "A man sleeps.", "label": 0,
                              "idx": 0}],
      "validation_mismatched": [{"premise": "x", "hypothesis": "y", "label": 2, "idx": 0}]},
     "validation", "mnli hypothesis: A man sleeps. premise: A man is sleeping.", "entailment", 0),
    ("glue_mrpc_v002", ("glue", "mrpc", "2.0.0"), _glue(["not_equivalent", "equivalent"], sentence1=1, sentence2=1),
     {"train": [{"sentence1": "a", "sentence2": "b", "label": 0, "idx": 0}],
      "validation": [{"sentence1": "He said hi.", "sentence2": "He greeted.", "label": 1, "idx": 0}]},
     "validation", "mrpc sentence1: He said hi. sentence2: He greeted.", "equivalent", 1),
    ("glue_qnli_v002", ("glue", "qnli", "2.0.0"), _glue(["entailment", "not_entailment"], question=1, sentence=1),
     {"train": [{"question": "q", "sentence": "s", "label": 0, "idx": 0}],
      "validation": [{"question": "Who won?", "sentence": "Nobody came.", "label": 1, "idx": 0}]},
     "validation", "qnli question: Who won? sentence: Nobody came.", "not_entailment", 1),
    ("super_glue_cb_v102", ("super_glue", "cb", "1.0.2"),
     _glue(["entailment", "contradiction", "neutral"], premise=1, hypothesis=1),
     {"train": [{"premise": "p", "hypothesis": "h", "label": 0, "idx": 0}],
      "validation": [{"premise": "It rained.", "hypothesis": "It was dry.", "label": 1, "idx": 0}]},
     "validation", "cb hypothesis: It was dry. premise: It rained.", "contradiction", 1),
    ("wmt15_enfr_v003", ("wmt15_translate", "fr-en", "1.0.0"), F.Translation(languages=("fr", "en")),
     {"train": [{"fr": "Bonjour", "en": "Hello"}],
      "validation": [{"fr": "C'est très bien.", "en": "That is very good."}]},
     "validation", "translate English to French: That is very good.", "C'est très bien.", "C'est très bien."),
    ("glue_stsb_v002", ("glue", "stsb", "2.0.0"),
     F.FeaturesDict({"sentence1": T(), "sentence2": T(), "label": F.Scalar(dtype=np.float32),
                     "idx": F.Scalar(dtype=I32)}),
     # 3.77 * 5 = 18.85 -> 19 / 5 = 3.8 (steps of 0.2)
     {"train": [{"sentence1": "a", "sentence2": "b", "label": 2.5, "idx": 0}],
      "validation": [{"sentence1": "A cat.", "sentence2": "A kitten.", "label": 3.77, "idx": 0}]},
     "validation", "stsb sentence1: A cat. sentence2: A kitten.", "3.8", 3.8),
    ("super_glue_boolq_v102", ("super_glue", "boolq", "1.0.2"), _glue(["False", "True"], question=1, passage=1),
     {"train": [{"question": "q", "passage": "p", "label": 0, "idx": 0}],
      "validation": [{"question": "is water wet", "passage": "Water is wet.", "label": 1, "idx": 0}]},
     "validation", "boolq passage: Water is wet. question: is water wet", "True", 1),
    ("super_glue_copa_v102", ("super_glue", "copa", "1.0.2"),
     _glue(["choice1", "choice2"], premise=1, choice1=1, choice2=1, question=1),
     {"train": [{"premise": "p", "choice1": "a", "choice2": "b", "question": "effect", "label": 1, "idx": 0}],
      "validation": [{"premise": "The man broke his toe.", "choice1": "He dropped a hammer on his foot.",
                      "choice2": "He got a hole in his sock.", "question": "cause", "label": 0, "idx": 0}]},
     "validation", "copa choice1: He dropped a hammer on his foot. choice2: He got a hole in his sock. "
                   "premise: The man broke his toe. question: cause", "choice1", 0),
    ("super_glue_wic_v102", ("super_glue", "wic", "1.0.2"),
     F.FeaturesDict({"word": T(), "sentence1": T(), "sentence2": T(),
                     **{k: F.Scalar(dtype=I32) for k in ("start1", "start2", "end1", "end2", "idx")},
                     "label": F.ClassLabel(names=["False", "True"])}),
     {"train": [{"word": "w", "sentence1": "a", "sentence2": "b", "start1": 0, "start2": 0, "end1": 1,
                 "end2": 1, "idx": 0, "label": 1}],
      "validation": [{"word": "bank", "sentence1": "river bank", "sentence2": "bank account", "start1": 6,
                      "start2": 0, "end1": 10, "end2": 4, "idx": 0, "label": 0}]},
     "validation", "wic sentence1: river bank sentence2: bank account word: bank", "False", 0),
    ("super_glue_multirc_v102", ("super_glue", "multirc", "1.0.2"),
     F.FeaturesDict({"paragraph": T(), "question": T(), "answer": T(),
                     "idx": F.FeaturesDict({k: F.Scalar(dtype=I32) for k in ("paragraph", "question", "answer")}),
                     "label": F.ClassLabel(names=["False", "True"])}),
     {"train": [{"paragraph": "p", "question": "q", "answer": "a", "label": 0,
                 "idx": {"paragraph": 0, "question": 0, "answer": 0}}],
      "validation": [{"paragraph": "Sent 1: <b>Hi</b> there.<br>Sent 2: Bye.", "question": "What?",
                      "answer": "Hi", "label": 1, "idx": {"paragraph": 3, "question": 4, "answer": 5}}]},
     "validation", "multirc question: What? answer: Hi paragraph: Sent 1: Hi there. Sent 2: Bye.", "True",
     {"group": (3, 4), "value": 1}),
    ("super_glue_record_v102", ("super_glue", "record", "1.0.2"),
     F.FeaturesDict({"passage": T(), "query": T(), "entities": F.Sequence(T()), "answers": F.Sequence(T()),
                     "idx": F.FeaturesDict({"passage": F.Scalar(dtype=I32), "query": F.Scalar(dtype=I32)})}),
     {"train": [{"passage": "p", "query": "q", "entities": ["e"], "answers": ["e"],
                 "idx": {"passage": 0, "query": 0}}],
      "validation": [{"passage": "The cat sat.\n@highlight\nIt was happy", "query": "@placeholder sat",
                      "entities": ["cat", "mat", "cat"], "answers": ["cat", "the cat"],
                      "idx": {"passage": 0, "query": 1}}]},
     "validation", "record query: @placeholder sat entities: cat, mat passage: The cat sat. It was happy",
     "cat", ["cat", "the cat"]),
    ("super_glue_wsc_v102_simple_eval", ("super_glue", "wsc.fixed", "1.0.2"),
     F.FeaturesDict({"text": T(), "span1_index": F.Scalar(dtype=I32), "span2_index": F.Scalar(dtype=I32),
                     "span1_text": T(), "span2_text": T(), "idx": F.Scalar(dtype=I32),
                     "label": F.ClassLabel(names=["False", "True"])}),
     {"train": [{"text": WSC_TEXT, "span1_index": 0, "span2_index": 9, "span1_text": "The city councilmen",
                 "span2_text": "they", "idx": 0, "label": 1},
                {"text": WSC_TEXT, "span1_index": 4, "span2_index": 9, "span1_text": "the demonstrators",
                 "span2_text": "they", "idx": 1, "label": 0}],
      "validation": [{"text": WSC_TEXT, "span1_index": 0, "span2_index": 9, "span1_text": "The city councilmen",
                      "span2_text": "they", "idx": 0, "label": 1}]},
     "validation", "wsc: The city councilmen refused the demonstrators a permit because * they * feared "
                   "violence.", "The city councilmen", 1),
    ("cnn_dailymail_v002", ("cnn_dailymail", None, "3.4.0"),
     F.FeaturesDict({"article": T(), "highlights": T(), "publisher": T(), "id": T()}),
     {"train": [{"article": "a", "highlights": "h", "publisher": "cnn", "id": "0"}],
      "validation": [{"article": "A long story about cats.", "highlights": "Cats are great.", "publisher": "dm",
                      "id": "1"}]},
     "validation", "summarize: A long story about cats.", "Cats are great.", "Cats are great."),
    ("squad_v010_allanswers", ("squad", "v1.1", "3.0.0"),
     F.FeaturesDict({"id": T(), "title": T(), "context": T(), "question": T(),
                     "answers": F.Sequence({"text": T(), "answer_start": I32})}),
     {"train": [{"id": "0", "title": "t", "context": "c", "question": "q",
                 "answers": {"text": ["c"], "answer_start": [0]}}],
      "validation": [{"id": "1", "title": "Football", "context": "Denver Broncos won (again).",
                      "question": "Who won?",
                      "answers": {"text": ["Denver Broncos", "Broncos"], "answer_start": [0, 7]}}]},
     # T5 pads punctuation with spaces in question, context and answers
     "validation", "question: Who won ? context: Denver Broncos won ( again ) .", "Denver Broncos",
     ["Denver Broncos", "Broncos"]),
    ("wmt_t2t_ende_v003", ("wmt_t2t_translate", "de-en", "1.0.0"), F.Translation(languages=("de", "en")),
     {"train": [{"de": "Hallo", "en": "Hello"}], "validation": [{"de": "Das ist gut.", "en": "That is good."}]},
     "validation", "translate English to German: That is good.", "Das ist gut.", "Das ist gut."),
    ("wmt16_enro_v003", ("wmt16_translate", "ro-en", "1.0.0"), F.Translation(languages=("ro", "en")),
     {"train": [{"ro": "Bună", "en": "Hello"}], "validation": [{"ro": "Vă mulțumesc foarte mult.", "en": "Thank you very much."}]},
     "validation", "translate English to Romanian: Thank you very much.", "Vă mulțumesc foarte mult.",
     "Vă mulțumesc foarte mult."),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    for _, (name, config, version), features, splits, *_ in CASES:
        write_tfds(name, d, features, splits, "test fixture", config=config, version=version)
    return d


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_t5_format(data_dir, case):
    task_name, _, _, _, split, inputs, targets, post_target = case
    task = TaskRegistry.get(task_name).with_data_dir(data_dir)
    examples = list(task.get_examples(split, shuffle=False))
    assert len(examples) == 1
    ex = examples[0]
    assert ex["inputs_pretokenized"] == inputs
    assert ex["targets_pretokenized"] == targets
    # tokens end with EOS and decode back to the text (builtin vocab covers these ASCII strings)
    assert ex["targets"][-1] == 1 and ex["inputs"][-1] == 1
    post = task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True)
    assert post == (pytest.approx(post_target) if isinstance(post_target, float) else post_target)
    # predicting the target text itself scores perfectly under every metric of the task
    # (correlations are undefined on one example, and CB's F1 averages over all 3 classes, two of
    # them absent here and scored 0 as in sklearn; those are tested in test_metrics_t5.py)
    pred = task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=False)
    assert task.metric_fns
    for fn in task.metric_fns:
        for key, value in fn([post], [pred]).items():
            if key not in ("matthews_corrcoef", "pearson_corrcoef", "spearman_corrcoef", "mean_3class_f1"):
                assert value == pytest.approx(100.0), key


def test_invalid_label_prediction_is_wrong(data_dir):
    task = TaskRegistry.get("glue_cola_v002").with_data_dir(data_dir)
    ex = next(iter(task.get_examples("validation", shuffle=False)))
    target = task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True)
    assert task.postprocess_fn("maybe", example=ex) == -1
    # t=(0,1), p=(-1,1): the -1 is its own (wrong) class.  Row sums t=(0,1,1), column sums
    # p=(1,0,1), trace 1, n=2 -> (1*2 - 1) / sqrt((4-2)*(4-2)) = 0.5
    assert task.metric_fns[0]([target, 1], [-1, 1])["matthews_corrcoef"] == pytest.approx(50.0)
    assert TaskRegistry.get("glue_stsb_v002").postprocess_fn("n/a") == -1.0


def test_stsb_rounds_half_to_even_like_t5(data_dir):
    # tf.round (T5) rounds half to even: 2.5 * 5 = 12.5 -> 12 -> "2.4"
    task = TaskRegistry.get("glue_stsb_v002").with_data_dir(data_dir)
    ex = next(iter(task.get_examples("train", shuffle=False)))
    assert ex["targets_pretokenized"] == "2.4"


def test_wsc_training_keeps_correct_referents_only(data_dir):
    train = TaskRegistry.get("super_glue_wsc_v102_simple_train").with_data_dir(data_dir)
    got = [e["targets_pretokenized"] for e in train.get_examples("train", shuffle=False)]
    assert got == ["The city councilmen"]
    eval_task = TaskRegistry.get("super_glue_wsc_v102_simple_eval")
    ex = {"targets_pretokenized": "the demonstrators", "label": 0}
    # predicting the other candidate says "not this referent" -> 0 == label -> counted right
    assert eval_task.postprocess_fn("the councilmen", example=ex) == 0


def test_mnli_mismatched_split_is_readable(data_dir):
    task = TaskRegistry.get("glue_mnli_v002").with_data_dir(data_dir)
    ex = next(iter(task.get_examples("validation_mismatched", shuffle=False)))
    assert ex["targets_pretokenized"] == "contradiction"


def test_all_t5_names_registered():
    names = set(TaskRegistry.names())
    expected = {f"glue_{t}_v002" for t in ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli",
                                           "mnli_matched", "mnli_mismatched")}
    expected |= {f"super_glue_{t}_v102" for t in ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc")}
    expected |= {"cnn_dailymail_v002", "squad_v010_allanswers", "wmt_t2t_ende_v003", "wmt15_enfr_v003",
                 "wmt16_enro_v003"}
    assert expected <= names
