"""builtin_wordnet_pos: a real classification task on the shipped corpus (WordNet gloss -> part of
speech), for fine-tuning where no downloaded or locally built dataset exists (smoke-scale studies)."""

import collections

from t5x_lite.data import TaskRegistry, get_vocabulary
from t5x_lite.data.sources import BuiltinSource, in_validation
from t5x_lite.evaluation.evaluator import compute_metrics, lm_format_task
from t5x_lite.tasks.builtin import WORDNET_POS, wordnet_pos_text

TASK = "builtin_wordnet_pos"


def test_format():
    doc = ('whole, unit (noun): an assemblage of parts that is regarded as a single entity; '
           '"how big is that part compared to the whole?"')
    assert wordnet_pos_text({"text": doc}, None) == {
        "inputs": 'wordnet pos: an assemblage of parts that is regarded as a single entity; '
                  '"how big is that part compared to the whole?"',
        "targets": "noun"}
    assert wordnet_pos_text({"text": b"run (verb): move fast (on foot): quickly"}, None)["inputs"] == \
        "wordnet pos: move fast (on foot): quickly"                    # the text after the first "): "
    shakespeare = "LAFEU. He hath abandoned his physicians, madam; under whose practices (he saith): time"
    assert wordnet_pos_text({"text": shakespeare}, None) is None       # filtered out


def test_split_labels_and_order():
    """Every WordNet document of a corpus split is one example of that split (Shakespeare left out);
    the four parts of speech are every label; the first examples are not all nouns."""
    task = TaskRegistry.get(TASK)
    corpus = BuiltinSource()
    dropped_count = {}
    for split in ("train", "validation"):
        docs = [corpus.get(split)[i]["text"] for i in range(corpus.num_examples(split))]
        kept = [d for d in docs if wordnet_pos_text({"text": d}, None) is not None]
        dropped = [d for d in docs if wordnet_pos_text({"text": d}, None) is None]
        dropped_count[split] = len(dropped)
        assert all(in_validation(d) == (split == "validation") for d in kept[:2000])
        if split == "validation":
            examples = list(task.get_examples("validation"))
            assert len(examples) == len(kept) == 1860
            labels = collections.Counter(e["targets_pretokenized"] for e in examples)
            assert set(labels) == set(WORDNET_POS) and labels.most_common(1)[0] == ("noun", 1295)
            assert all(e["inputs_pretokenized"].startswith("wordnet pos: ") for e in examples)
            first = collections.Counter(e["targets_pretokenized"] for e in examples[:64])
            assert first["noun"] < 60 and len(first) >= 3               # a fixed shuffle, not WordNet order
            assert [e["inputs_pretokenized"] for e in examples[:5]] == \
                [e["inputs_pretokenized"] for e in list(task.get_examples("validation"))[:5]]   # deterministic
        else:
            assert len(kept) == 119507 - 3708
    assert sum(dropped_count.values()) == 3771                          # MANIFEST.json: the Shakespeare documents
    vocab = get_vocabulary("builtin")
    assert all(vocab.decode(vocab.encode(p)) == p for p in WORDNET_POS)


def test_accuracy_metric():
    task = TaskRegistry.get(TASK)
    examples = list(task.get_examples("validation"))[:8]
    gold = [e["targets_pretokenized"] for e in examples]
    assert compute_metrics(task, examples, gold) == {"accuracy": 100.0}
    wrong = ["noun" if g != "noun" else "verb" for g in gold[:4]] + ["not a label"] + gold[5:]
    assert compute_metrics(task, examples, wrong) == {"accuracy": 100.0 * 3 / 8}
    # the decoder-only fine-tuning format ("... target: noun") has the same metric
    lm = TaskRegistry.get(lm_format_task(TASK))
    ex = next(iter(lm.get_examples("validation")))
    assert ex["inputs_pretokenized"].endswith(" target:") and lm.metric_fns == task.metric_fns
