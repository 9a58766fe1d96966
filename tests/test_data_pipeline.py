"""The grain pipeline: determinism, exact resume (also for 2 emulated hosts), epochs, packing invariants,
and the user errors (empty source, missing file, over-long text, unknown names)."""

import json

import numpy as np
import pytest

import t5x_lite.tasks  # noqa: F401  (registers the builtin_* tasks)
from t5x_lite.data import (InMemorySource, Mixture, MixtureRegistry, Task, TaskRegistry, TextLineSource,
                           get_vocabulary, make_pipeline)
from t5x_lite.data import preprocessors as pp
from t5x_lite.data.preprocessors import Feature
from t5x_lite.errors import UserError

VOCAB = get_vocabulary("builtin")
SMALL = {"inputs": 64, "targets": 16}


def pipe(name="builtin_span_corruption", **kw):
    args = dict(split="train", feature_lengths=SMALL, architecture="encoder_decoder", batch_size=4, seed=0,
                process_index=0, process_count=1)
    args.update(kw)
    return make_pipeline(name, **args)


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture
def registered():
    """Register throwaway tasks; remove them afterwards."""
    names = []

    def add(task_or_mixture):
        reg = MixtureRegistry if isinstance(task_or_mixture, Mixture) else TaskRegistry
        reg.add(task_or_mixture)
        names.append((reg, task_or_mixture.name))
        return task_or_mixture.name
    yield add
    for reg, name in names:
        reg.remove(name)


def id_task(name, n, text=True):
    """Documents "doc <i>" (text) -> inputs = targets = tokens; the doc id is recoverable from the text."""
    rows = [{"inputs": f"doc {i} " + "x " * (i % 7), "targets": f"doc {i}"} for i in range(n)]
    feats = {"inputs": Feature(VOCAB), "targets": Feature(VOCAB)}
    return Task(name, InMemorySource({"train": rows, "validation": rows[:5], "empty": []}),
                [pp.tokenize, pp.append_eos], feats)


# ------------------------------------------------------------------------------------------------
# Determinism and resume
# ------------------------------------------------------------------------------------------------
def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b, c = pipe(seed=1), pipe(seed=1), pipe(seed=2)
    for _ in range(3):
        x, y, z = next(a), next(b), next(c)
        assert same(x, y)
    assert not np.array_equal(x["encoder_input_tokens"], z["encoder_input_tokens"])


def test_document_blocks_do_not_change_the_data():
    """Reading documents in blocks (the default, for speed) yields exactly the stream of block size 1."""
    a = pipe("builtin_lm", architecture="decoder_only", docs_per_block=1)
    b = pipe("builtin_lm", architecture="decoder_only")
    for _ in range(10):
        assert same(next(a), next(b))


@pytest.mark.parametrize("name,arch,pack", [
    ("builtin_span_corruption", "encoder_decoder", True),
    ("builtin_prefix_lm", "decoder_only", True),
    ("builtin_lm", "decoder_only", False),
    ("builtin_mlm", "encoder_only", True),
])
def test_exact_resume(name, arch, pack):
    ref = pipe(name, architecture=arch, pack=pack)
    batches = [next(ref) for _ in range(7)]
    first = pipe(name, architecture=arch, pack=pack)
    for _ in range(3):
        next(first)
    state = json.loads(json.dumps(first.get_state()))     # JSON round trip, as in a checkpoint
    restored = pipe(name, architecture=arch, pack=pack)
    restored.set_state(state)
    for want in batches[3:]:
        assert same(next(restored), want)
    # get_state is side-effect free and the original iterator continues identically
    assert same(next(first), batches[3])


def test_resume_with_pending_packed_example(registered):
    """Packing keeps an example that did not fit in the emitted batch; the state must replay it."""
    name = registered(id_task("t_pack_resume", 50))
    kw = dict(feature_lengths={"inputs": 24, "targets": 8}, batch_size=2)
    ref = pipe(name, **kw)
    batches = [next(ref) for _ in range(6)]
    for k in range(1, 5):
        p = pipe(name, **kw)
        for _ in range(k):
            next(p)
        q = pipe(name, **kw)
        q.set_state(json.loads(json.dumps(p.get_state())))
        assert same(next(q), batches[k]) and same(next(q), batches[k + 1])


def test_state_for_another_pipeline_is_rejected():
    p = pipe()
    next(p)
    with pytest.raises(UserError, match="different pipeline"):
        pipe(seed=5).set_state(p.get_state())


def test_two_hosts_disjoint_and_each_resumes(registered):
    name = registered(id_task("t_two_hosts", 40))
    kw = dict(batch_size=4, pack=False, num_epochs=1, shuffle=True, seed=3, feature_lengths={"inputs": 32, "targets": 8})
    hosts = [pipe(name, process_index=i, process_count=2, **kw) for i in range(2)]
    seen = [[], []]
    for h in range(2):
        for batch in hosts[h]:
            assert batch["encoder_input_tokens"].shape == (2, 32)     # local batch = global / hosts
            for row, seg in zip(batch["decoder_target_tokens"], batch["decoder_segment_ids"]):
                if seg.any():
                    seen[h].append(VOCAB.decode(row))
    assert len(seen[0]) == len(seen[1]) == 20
    assert not set(seen[0]) & set(seen[1])                             # disjoint
    assert sorted(seen[0] + seen[1]) == sorted(f"doc {i}" for i in range(40))   # together: everything once
    # exact resume per host
    for h in range(2):
        ref = pipe(name, process_index=h, process_count=2, **kw)
        want = [next(ref) for _ in range(5)]
        p = pipe(name, process_index=h, process_count=2, **kw)
        next(p), next(p)
        q = pipe(name, process_index=h, process_count=2, **kw)
        q.set_state(json.loads(json.dumps(p.get_state())))
        for w in want[2:]:
            assert same(next(q), w)


def test_two_hosts_span_corruption_read_different_documents():
    a = pipe(process_index=0, process_count=2, batch_size=8)
    b = pipe(process_index=1, process_count=2, batch_size=8)
    rows_a = {r.tobytes() for _ in range(3) for r in next(a)["encoder_input_tokens"]}
    rows_b = {r.tobytes() for _ in range(3) for r in next(b)["encoder_input_tokens"]}
    assert len(rows_a) == 12 and not rows_a & rows_b


def test_epochs_repeat_with_a_different_shuffle(registered):
    name = registered(id_task("t_epochs", 12))
    p = pipe(name, batch_size=1, pack=False, num_epochs=3, shuffle=True)
    order = [VOCAB.decode(b["decoder_target_tokens"][0]) for b in p]
    assert len(order) == 36
    epochs = [order[i * 12:(i + 1) * 12] for i in range(3)]
    for e in epochs:
        assert sorted(e) == sorted(f"doc {i}" for i in range(12))    # each epoch is a permutation
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def test_mixture_rates_and_resume(registered):
    t1 = registered(id_task("t_mix_a", 30))
    rows = [{"inputs": f"other {i}", "targets": f"other {i}"} for i in range(30)]
    registered(Task("t_mix_b", InMemorySource({"train": rows}), [pp.tokenize, pp.append_eos],
                    {"inputs": Feature(VOCAB), "targets": Feature(VOCAB)}))
    mix = registered(Mixture("t_mix", [(t1, 3.0), ("t_mix_b", 1.0)]))
    p = pipe(mix, batch_size=1, pack=False, feature_lengths={"inputs": 16, "targets": 8})
    texts = [VOCAB.decode(next(p)["decoder_target_tokens"][0]) for _ in range(400)]
    frac_a = np.mean([t.startswith("doc") for t in texts])
    assert abs(frac_a - 0.75) < 0.06
    q = pipe(mix, batch_size=1, pack=False, feature_lengths={"inputs": 16, "targets": 8})
    for _ in range(10):
        next(q)
    r = pipe(mix, batch_size=1, pack=False, feature_lengths={"inputs": 16, "targets": 8})
    r.set_state(json.loads(json.dumps(q.get_state())))
    assert [VOCAB.decode(next(r)["decoder_target_tokens"][0]) for _ in range(20)] == texts[10:30]


# ------------------------------------------------------------------------------------------------
# Packing invariants
# ------------------------------------------------------------------------------------------------
def segments(tokens, seg, pos):
    """Split packed rows into per-example arrays, checking segment ids / positions on the way."""
    out = []
    for row_t, row_s, row_p in zip(tokens, seg, pos):
        ids = row_s[row_s > 0]
        assert np.all(np.diff(ids) >= 0)                       # segments are contiguous, increasing
        assert np.all(row_s[len(ids):] == 0) and np.all(row_t[len(ids):] == 0)   # padding only at the end
        for s in np.unique(ids):
            where = np.flatnonzero(row_s == s)
            assert np.array_equal(row_p[where], np.arange(len(where)))         # positions restart at 0
            out.append(tuple(row_t[where].tolist()))
    return out


def test_encdec_packing_invariants(registered):
    name = registered(id_task("t_packing", 60))
    lengths = {"inputs": 40, "targets": 12}
    task = TaskRegistry.get(name)
    expected = [(tuple(e["inputs"].tolist()), tuple(e["targets"].tolist()))
                for e in task.get_examples("train", seed=4, shuffle=True, feature_lengths=lengths)]
    got, packed_rows = [], 0
    for b in pipe(name, feature_lengths=lengths, batch_size=4, num_epochs=1, seed=4):
        enc = segments(b["encoder_input_tokens"], b["encoder_segment_ids"], b["encoder_positions"])
        dec = segments(b["decoder_target_tokens"], b["decoder_segment_ids"], b["decoder_positions"])
        assert len(enc) == len(dec)
        got += list(zip(enc, dec))
        packed_rows += int((b["encoder_segment_ids"].max(axis=1) > 1).sum())
        # decoder inputs: targets shifted right, BOS=0 at every segment start
        start = b["decoder_positions"] == 0
        assert np.all(b["decoder_input_tokens"][start] == 0)
        inner = ~start & (b["decoder_segment_ids"] > 0)
        shifted = np.zeros_like(b["decoder_target_tokens"])
        shifted[:, 1:] = b["decoder_target_tokens"][:, :-1]
        assert np.array_equal(b["decoder_input_tokens"][inner], shifted[inner])
        # loss weights exactly on real target tokens
        assert np.array_equal(b["decoder_loss_weights"] > 0, b["decoder_target_tokens"] > 0)
        # encoder and decoder segment ids describe the same examples per row
        assert np.array_equal(b["encoder_segment_ids"].max(1), b["decoder_segment_ids"].max(1))
    assert sorted(got) == sorted(expected)          # no example or token lost or duplicated
    assert packed_rows > 0                          # packing really put several examples in a row


def test_prefix_lm_converter_loss_only_on_targets():
    b = next(pipe("builtin_prefix_lm", architecture="decoder_only", feature_lengths={"inputs": 32, "targets": 32}))
    assert b["decoder_target_tokens"].shape == (4, 64)
    for row in range(4):
        for s in np.unique(b["decoder_segment_ids"][row]):
            if s == 0:
                continue
            w = np.flatnonzero(b["decoder_segment_ids"][row] == s)
            loss, causal = b["decoder_loss_weights"][row, w], b["decoder_causal_attention"][row, w]
            n_inputs = int((loss == 0).sum())
            assert np.all(loss[:n_inputs] == 0) and np.all(loss[n_inputs:] == 1)   # inputs first, then targets
            assert np.all(causal[:n_inputs + 1] == 1) and np.all(causal[n_inputs + 1:] == 0)
    assert np.all(b["decoder_loss_weights"][b["decoder_segment_ids"] == 0] == 0)


def test_mlm_converter():
    b = next(pipe("builtin_mlm", architecture="encoder_only", feature_lengths={"inputs": 64}))
    w = b["encoder_loss_weights"].astype(bool)
    assert 0.1 < w.sum() / (b["encoder_segment_ids"] > 0).sum() < 0.2
    assert np.array_equal(b["encoder_input_tokens"][~w], b["encoder_target_tokens"][~w])


def test_lm_unpacked_rows_are_full_chunks():
    b = next(pipe("builtin_lm", architecture="decoder_only", pack=False, feature_lengths={"targets": 32}))
    assert np.all(b["decoder_segment_ids"] == 1) and b["decoder_loss_weights"].sum() == 4 * 32


# ------------------------------------------------------------------------------------------------
# User errors
# ------------------------------------------------------------------------------------------------
def test_empty_source(registered):
    name = registered(id_task("t_empty", 3))
    with pytest.raises(UserError, match="empty"):
        pipe(name, split="empty")


def test_every_document_filtered_is_user_error(registered):
    rows = [{"text": ""}] * 5
    name = registered(Task("t_all_empty", InMemorySource({"train": rows}), pp.pretraining_preprocessors("span_corruption"),
                           {"inputs": Feature(VOCAB), "targets": Feature(VOCAB)}))
    with pytest.raises(UserError, match="every document was filtered"):
        next(pipe(name))


def test_every_example_without_targets_is_user_error(registered, monkeypatch):
    import t5x_lite.data.pipeline as pipeline_lib
    monkeypatch.setattr(pipeline_lib, "_MAX_CONSECUTIVE_DROPS", 50)
    rows = [{"inputs": "some text", "targets": ""}] * 5
    name = registered(Task("t_no_targets", InMemorySource({"train": rows}), [pp.tokenize],
                           {"inputs": Feature(VOCAB), "targets": Feature(VOCAB)}))
    with pytest.raises(UserError, match="empty targets"):
        next(pipe(name))


def test_missing_file(registered, tmp_path):
    feats = {"targets": Feature(VOCAB)}
    name = registered(Task("t_missing", TextLineSource({"train": str(tmp_path / "nope*.txt")}),
                           pp.pretraining_preprocessors("full_lm"), feats))
    with pytest.raises(UserError, match="no file matches"):
        pipe(name, architecture="decoder_only")


def test_text_longer_than_every_limit(registered):
    rows = [{"inputs": "short", "targets": "short"}, {"inputs": "word " * 300, "targets": "x"}]
    name = registered(Task("t_long", InMemorySource({"train": rows}), [pp.tokenize, pp.append_eos],
                           {"inputs": Feature(VOCAB), "targets": Feature(VOCAB)}))
    with pytest.raises(UserError, match="more than the feature length"):
        list(pipe(name, trim=False, shuffle=False, num_epochs=1, feature_lengths={"inputs": 64, "targets": 8}))
    # with trimming (the default) the long example is cut to the feature length
    batches = list(pipe(name, shuffle=False, num_epochs=1, pack=False, feature_lengths={"inputs": 64, "targets": 8}))
    assert (batches[0]["encoder_segment_ids"] > 0).sum(1).max() == 64


def test_unknown_task_lists_close_matches():
    with pytest.raises(UserError, match="did you mean: builtin_span_corruption"):
        pipe("builtin_span_coruption")


def test_duplicate_task_name_is_user_error():
    with pytest.raises(UserError, match="already registered"):
        TaskRegistry.add(TaskRegistry.get("builtin_lm"))


def test_bad_arguments():
    with pytest.raises(UserError, match="multiple"):
        pipe(batch_size=3, process_count=2, process_index=0)
    with pytest.raises(UserError, match="needs a task with inputs"):
        pipe("builtin_lm", architecture="encoder_decoder")
    with pytest.raises(UserError, match="unknown architecture"):
        pipe(architecture="transformer")
