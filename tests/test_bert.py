"""BERT pretraining (t5x_lite/data/bert.py, models/bert.py, train/bert_objective.py): next-sentence
pairs (balanced, negatives from another document), MLM statistics, segment ids through packing, the
MLM + NSP loss normalisation, BERT-base's parameter count and a checkpoint round trip of every head.

The data tests use a vocabulary whose token ids ARE the text ("103 104 105"): document i holds the
ids 100 i + 3 .. 100 i + 3 + len - 1 in order, so every token says which document it came from and
whether B continues A."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from t5x_lite.data import InMemorySource
from t5x_lite.data import bert as bert_data
from t5x_lite.data.feature_converters import EncoderFeatureConverter, Packer
from t5x_lite.data.vocabularies import Vocabulary
from t5x_lite.models import ModelConfig, build_model, count_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_DOCS = 100


class IdVocabulary(Vocabulary):
    """Text "5 6 7" <-> ids [5, 6, 7]; 3 extra ids on top of 10100 ([MASK], [CLS], [SEP])."""

    def __init__(self):
        super().__init__(extra_ids=3)

    @property
    def base_vocab_size(self):
        return 10100

    def _encode_plain(self, text):
        return [int(t) for t in text.split()]

    def _decode_plain(self, ids):
        return " ".join(map(str, ids))


VOCAB = IdVocabulary()
CLS, SEP, MASK = bert_data.special_ids(VOCAB)


def _docs():
    lengths = np.random.default_rng(0).integers(1, 90, NUM_DOCS)   # some 1-token docs (dropped), some > a window
    return [{"text": " ".join(str(100 * i + 3 + k) for k in range(n))} for i, n in enumerate(lengths)]


def _doc_of(tokens):
    return set(((np.asarray(tokens) - 3) // 100).tolist())


@pytest.fixture(scope="module")
def examples():
    task = bert_data.bert_task("test_bert_ids", InMemorySource({"train": _docs()}), VOCAB)
    it = task.get_examples("train", seed=3, shuffle=True, feature_lengths={"inputs": 48}, num_epochs=None)
    return [next(it) for _ in range(3000)]


def _split(ex):
    """(A, B) original tokens of an example, checking the [CLS] A [SEP] B [SEP] frame."""
    t = np.asarray(ex["targets"])
    seps = np.flatnonzero(t == SEP)
    assert t[0] == CLS and len(seps) == 2 and seps[1] == len(t) - 1 and len(t) <= 48
    return t[1:seps[0]], t[seps[0] + 1:seps[1]]


def test_nsp_labels_are_balanced_and_negatives_come_from_another_document(examples):
    labels = np.array([int(ex["nsp_label"]) for ex in examples])
    assert abs(labels.mean() - 0.5) < 0.03, labels.mean()
    negatives_seen = 0
    for ex in examples:
        a, b = _split(ex)
        assert len(a) >= 1 and (_doc_of(a) | _doc_of(b)) <= set(range(NUM_DOCS))
        (own,) = _doc_of(a)
        assert np.all(np.diff(a) == 1)                                  # A: a contiguous run of its document
        if ex["nsp_label"] == 1:
            assert len(b) >= 1 and b[0] == a[-1] + 1 and np.all(np.diff(b) == 1)   # B continues A
        elif len(b):
            assert _doc_of(b) == {bert_data.partner_index(own, NUM_DOCS, 0)} != {own}
            negatives_seen += 1
    assert negatives_seen > 1000


def test_mlm_selects_15_percent_and_corrupts_80_10_10(examples):
    chosen = masked = random = kept = eligible = 0
    for ex in examples:
        t, x, w = (np.asarray(ex[k]) for k in ("targets", "inputs", "loss_weights"))
        special = np.isin(t, (CLS, SEP))
        assert not np.any(w[special]) and np.all(x[special] == t[special])   # [CLS]/[SEP] never chosen
        assert np.all(x[w == 0] == t[w == 0])                              # unchosen tokens untouched
        sel = w == 1
        eligible += int(np.sum(~special))
        chosen += int(np.sum(sel))
        masked += int(np.sum(x[sel] == MASK))
        kept += int(np.sum(x[sel] == t[sel]))
        random += int(np.sum((x[sel] != MASK) & (x[sel] != t[sel])))
        assert np.all((x[sel] == MASK) | (x[sel] < VOCAB.first_sentinel_id))   # random ids are never special
    assert abs(chosen / eligible - 0.15) < 0.01
    assert abs(masked / chosen - 0.8) < 0.02 and abs(random / chosen - 0.1) < 0.015 and abs(kept / chosen - 0.1) < 0.015


def test_segment_ids_and_packing(examples):
    conv = EncoderFeatureConverter({"inputs": 48})
    packer = Packer(conv.stacks, 2, pack=True)
    batch_examples = []
    for ex in examples[:40]:
        if not packer.try_add(conv.prepare(ex)):
            break
        batch_examples.append(ex)
    b = conv.finalize(packer.emit())
    types, seg, pos, nsp = (b[k] for k in ("encoder_token_type_ids", "encoder_segment_ids", "encoder_positions",
                                           "encoder_nsp_labels"))
    assert seg.max() >= 3                                   # several pairs packed into a row
    for r in range(2):
        for s in range(1, seg[r].max() + 1):
            m = seg[r] == s
            tok = b["encoder_target_tokens"][r][m]
            a, bb = _split({"targets": tok})
            want = np.concatenate([np.zeros(len(a) + 2), np.ones(len(bb) + 1)])
            np.testing.assert_array_equal(types[r][m], want)          # 0 on [CLS] A [SEP], 1 on B [SEP]
            np.testing.assert_array_equal(pos[r][m], np.arange(m.sum()))
            assert len(set(nsp[r][m].tolist())) == 1                  # one NSP label per packed example
        pad = seg[r] == 0
        assert not types[r][pad].any() and not nsp[r][pad].any() and not b["encoder_loss_weights"][r][pad].any()
    labels = sorted(int(x["nsp_label"]) for x in batch_examples)
    starts = (pos == 0) & (seg > 0)
    assert sorted(nsp[starts].tolist()) == labels and int(starts.sum()) == len(batch_examples)


TINY = dict(architecture="encoder_only", vocab_size=VOCAB.vocab_size, d_model=32, num_heads=2, d_kv=16, d_ff=64,
            num_encoder_layers=1, position_embedding="learned", max_position_embeddings=48, type_vocab_size=2,
            nsp_head=True, mlp_activations=("gelu_exact",))


def _packed_batch(examples, rows=2):
    conv = EncoderFeatureConverter({"inputs": 48})
    packer = Packer(conv.stacks, rows, pack=True)
    for ex in examples:
        if not packer.try_add(conv.prepare(ex)):
            break
    return {k: jnp.asarray(v) for k, v in conv.finalize(packer.emit()).items()}


def test_bert_loss_is_mean_mlm_plus_mean_nsp(examples):
    from t5x_lite.models import bert as heads
    from t5x_lite.train import objectives

    cfg = ModelConfig(**TINY)
    graphdef, params = nnx.split(build_model(cfg, nnx.Rngs(0)), nnx.Param)
    batch = _packed_batch(examples)
    sums_fn = objectives.sums_fn_for(cfg)

    def loss(p):
        sums = sums_fn(nnx.merge(graphdef, p), batch, deterministic=True, dropout_rng=None, z_loss=0.0,
                       label_smoothing=0.0)
        return sums["loss_sum"], sums

    grads, sums = jax.jit(jax.grad(loss, has_aux=True))(params)
    aux = {k: float(n) / float(d) for k, (n, d) in sums["aux"].items()}
    pos, seg = np.asarray(batch["encoder_positions"]), np.asarray(batch["encoder_segment_ids"])
    n_examples = int(np.sum((pos == 0) & (seg > 0)))
    assert float(sums["aux"]["nsp_loss"][1]) == n_examples > 2
    assert float(sums["weight_sum"]) == float(np.sum(batch["encoder_loss_weights"]))
    np.testing.assert_allclose(float(sums["loss_sum"]) / float(sums["weight_sum"]), aux["mlm_loss"] + aux["nsp_loss"],
                               rtol=1e-5)
    assert 0.3 < aux["nsp_loss"] < 2.0 and aux["mlm_loss"] > 5.0
    g = nnx.to_pure_dict(grads)   # the NSP head gets a gradient (the scale W / N is data, not differentiated)
    assert float(jnp.abs(g["nsp_head"]["kernel"]).sum()) > 0 and float(jnp.abs(g["pooler"]["kernel"]).sum()) > 0
    assert float(jnp.abs(g["token_type_embedder"]["embedding"][1]).sum()) > 0
    assert heads.has_nsp_head(cfg) and objectives.bert_sums is not None


def _bert_config(name):
    spec = importlib.util.spec_from_file_location("bert_config", os.path.join(ROOT, "configs", "bert.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(name)


def test_bert_base_has_the_papers_110m_parameters():
    c = _bert_config("bert_base")
    model = dict(c.model)
    assert model["vocab_size"] == 30522 and model["d_model"] == 768 and model["num_encoder_layers"] == 12
    cfg = ModelConfig.from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in model.items()})
    n = count_params(cfg)
    assert abs(n / 110e6 - 1) < 0.02, n
    tree = nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0)))
    assert n == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(tree, nnx.Param)))
    mlm_only = dict(_bert_config("bert_base_mlm_only").model)
    assert mlm_only["nsp_head"] is False
    no_pooler_no_nsp = n - (768 * 768 + 768) - (768 * 2 + 2)
    assert count_params(ModelConfig.from_dict({k: tuple(v) if isinstance(v, list) else v
                                               for k, v in mlm_only.items()})) == no_pooler_no_nsp


@pytest.mark.parametrize("variant", [dict(), dict(num_classes=5, classifier_pooling="first")],
                         ids=["bert", "classifier"])
def test_checkpoint_round_trip_of_every_head(tmp_path, variant):
    from t5x_lite import loading
    from t5x_lite.checkpoints import save_params_checkpoint

    cfg = ModelConfig(**{**TINY, **variant})
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(build_model(cfg, nnx.Rngs(7)), nnx.Param)))
    heads = {"token_type_embedder", "pooler", "nsp_head"} if not variant else {"token_type_embedder", "classifier"}
    assert heads <= set(params) and (("logits_dense" in params["encoder"]) == (not variant))
    assert count_params(cfg) == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    save_params_checkpoint(str(tmp_path / "ck"), params, {"model": cfg.to_dict()})
    loaded = nnx.to_pure_dict(nnx.state(loading.load_model(str(tmp_path / "ck"), read_vocabulary=False).model,
                                        nnx.Param))
    flat_a, flat_b = loading.flatten_params(params), loading.flatten_params(loaded)
    assert set(flat_a) == set(flat_b)
    for k in flat_a:
        np.testing.assert_array_equal(flat_a[k], np.asarray(flat_b[k]))
