"""ELECTRA (models/electra.py, train/electra_objective.py, configs/electra.py): the discriminator's
labels, no gradient from the RTD loss into the generator, one shared embedding, the ELECTRA-Small
parameter count, the discriminator loading into an encoder_only model, and a real tiny training run
that lowers the loss and resumes bit-exactly."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from t5x_lite import checkpoints
from t5x_lite.errors import UserError
from t5x_lite.loading import flatten_params
from t5x_lite.models import ModelConfig, build_model, count_params
from t5x_lite.models.electra import generator_config, replace_tokens
from t5x_lite.models.flops import electra_param_counts as param_counts
from t5x_lite.train import config as config_lib
from t5x_lite.train import main as train_main
from t5x_lite.train.electra_objective import batch_key, electra_sums

from train_helpers import REPO, jax_cache_env

CFG = ModelConfig(architecture="electra", vocab_size=96, d_model=32, embedding_size=16, num_heads=4, d_kv=8, d_ff=64,
                  num_encoder_layers=2, position_embedding="learned", max_position_embeddings=16,
                  mlp_activations=("gelu_exact",))


def _model(cfg=CFG, seed=0):
    """build_model(cfg) with numpy-drawn params (eval_shape, then filled: no per-shape init kernels to
    compile); norm scales 1, tables std 1, kernels std 1/sqrt(fan-in)."""
    abstract = nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract, nnx.Param)
    rng = np.random.default_rng(seed)

    def fill(path, x):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return jnp.ones(x.shape, x.dtype)
        std = 1.0 if "embedding" in name else 1.0 / np.sqrt(x.shape[0])
        return jnp.asarray(rng.normal(0.0, std, x.shape), x.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


def _batch(seed=0, b=2, length=12, vocab=64):
    rng = np.random.default_rng(seed)
    targets = rng.integers(2, vocab, (b, length)).astype(np.int32)
    targets[:, -3:] = 0                                         # padding
    chosen = (rng.random((b, length)) < 0.4) & (targets != 0)
    chosen[:, 0] = True
    inputs = np.where(chosen, 3, targets).astype(np.int32)     # 3 plays [MASK]
    return {"encoder_input_tokens": jnp.asarray(inputs), "encoder_target_tokens": jnp.asarray(targets),
            "encoder_loss_weights": jnp.asarray(chosen.astype(np.int32))}


def test_labels_are_exactly_token_differs_from_original():
    originals = jnp.array([[5, 6, 7, 8, 9, 0]])
    masked = jnp.array([[True, True, False, True, True, False]])
    # the generator is sure of: 5 (= the original), 2, 4 (unmasked: ignored), 8 (= original), 0 (padding id), 3
    want = jnp.array([[5, 2, 4, 8, 0, 3]])
    logits = jnp.where(jax.nn.one_hot(want, 10) > 0, 50.0, -50.0)
    inputs, labels = jax.jit(replace_tokens)(jax.random.key(0), logits, originals, masked)
    # masked positions take the sample; a sample equal to the original is "original";
    # id 0 is never sampled (it would read as padding), so position 4 gets another token
    assert inputs[0, :4].tolist() == [5, 2, 7, 8] and inputs[0, 5] == 0 and int(inputs[0, 4]) != 0
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(inputs != originals))
    assert labels[0, :4].tolist() == [False, True, False, False] and not bool(labels[0, 5])
    assert bool(labels[0, 4]) == (int(inputs[0, 4]) != 9)


@pytest.fixture(scope="module")
def objective():
    """One jitted pass over a small model: the train-step sums, the generator's logits and the
    gradient of the RTD loss alone."""
    model = _model()
    graphdef, params = nnx.split(model, nnx.Param)
    batch, key = _batch(), jax.random.key(7)

    def sums_of(p):
        return electra_sums(nnx.merge(graphdef, p), batch, deterministic=True, dropout_rng=key, z_loss=1e-4,
                            label_smoothing=0.0, cfg=CFG)

    def run(p):
        rtd_grads = jax.grad(lambda q: sums_of(q)["aux"]["rtd_loss"][0])(p)
        logits = nnx.merge(graphdef, p).generator_logits(batch["encoder_input_tokens"])
        return sums_of(p), logits, rtd_grads

    sums, logits, rtd_grads = jax.jit(run)(params)
    return dict(batch=batch, key=key, sums=sums, logits=logits, rtd_grads=flatten_params(nnx.to_pure_dict(rtd_grads)))


def test_objective_labels_and_metrics_match_the_sampled_replacements(objective):
    batch, key, sums = objective["batch"], objective["key"], objective["sums"]
    # recompute what the objective drew with its sampling key (the 2nd of 3)
    chosen = batch["encoder_loss_weights"] > 0
    inputs, labels = jax.jit(replace_tokens)(jax.random.split(key, 3)[1], objective["logits"],
                                             batch["encoder_target_tokens"], chosen)
    real = batch["encoder_target_tokens"] != 0
    assert bool(jnp.all(inputs[~chosen] == batch["encoder_target_tokens"][~chosen]))
    assert float(sums["aux"]["replaced_fraction"][0]) == float(jnp.sum(labels & real)) > 0
    assert float(sums["weight_sum"]) == float(jnp.sum(real))
    assert float(sums["aux"]["gen_mlm_loss"][1]) == float(jnp.sum(chosen))
    assert float(sums["correct_sum"]) == float(sums["aux"]["rtd_accuracy"][0])
    # loss_sum / weight_sum is the paper's loss: mean generator CE (+ z-loss) + 50 * mean RTD BCE
    m, n = sums["aux"]["gen_mlm_loss"][1], sums["weight_sum"]
    paper = (sums["aux"]["gen_mlm_loss"][0] + sums["z_loss_sum"] * m / n) / m + 50.0 * sums["aux"]["rtd_loss"][0] / n
    np.testing.assert_allclose(float(sums["loss_sum"] / n), float(paper), rtol=1e-5)


def test_rtd_loss_sends_no_gradient_into_the_generator(objective):
    grads = objective["rtd_grads"]
    norm = lambda top: sum(float(np.abs(np.asarray(v)).sum()) for k, v in grads.items() if k[0] == top)
    assert ("generator", "mlm_head", "bias") in grads and norm("generator") == 0.0   # exactly zero
    # while the discriminator, its head and the shared embedding table do learn from it
    assert norm("encoder") > 0 and norm("rtd_head") > 0 and norm("token_embedder") > 0


def test_eval_sampling_key_is_a_function_of_the_batch():
    a, b = _batch(4)["encoder_input_tokens"], _batch(5)["encoder_input_tokens"]
    same = jax.random.key_data(batch_key(a)), jax.random.key_data(batch_key(jnp.array(np.asarray(a))))
    assert np.array_equal(*same)
    assert not np.array_equal(same[0], jax.random.key_data(batch_key(b)))


def test_one_embedding_table_shared_by_generator_and_discriminator():
    model = _model()
    flat = flatten_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    tables = [k for k, v in flat.items() if v.ndim == 2 and v.shape[0] == CFG.vocab_size]
    assert tables == [("token_embedder", "embedding")]
    assert not any("embedder" in part for k in flat if k[0] == "generator" for part in k)
    g = generator_config(CFG)
    assert flat[("generator", "embedding_projection", "kernel")].shape == (16, g.d_model) == (16, 8)
    # both networks read that one table: scaling it changes the generator's and the discriminator's logits
    graphdef, params = nnx.split(model, nnx.Param)
    batch = _batch(2)

    @jax.jit
    def both(p, scale):
        m = nnx.merge(graphdef, p)
        m.token_embedder.embedding[...] = m.token_embedder.embedding[...] * scale
        return m.generator_logits(batch["encoder_input_tokens"]), m(batch)

    before, after = both(params, 1.0), both(params, 2.0)
    assert all(float(jnp.max(jnp.abs(a - b))) > 1e-3 for a, b in zip(before, after))


def _small():
    config = train_main.parse_args(["--config", os.path.join(REPO, "configs", "electra.py:small")])[0]
    return config_lib.resolve(config)[0]


def test_electra_small_param_count_is_the_papers():
    cfg = _small()
    g = generator_config(cfg)
    assert (cfg.num_encoder_layers, cfg.d_model, cfg.num_heads, cfg.d_ff, cfg.embedding_size, cfg.vocab_size,
            cfg.max_position_embeddings) == (12, 256, 4, 1024, 128, 30522, 512)
    assert (g.d_model, g.num_heads, g.d_ff) == (64, 1, 256)
    abstract = nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0)))
    flat = flatten_params(nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))
    disc = sum(int(np.prod(v.shape)) for k, v in flat.items() if k[0] != "generator")
    counts = param_counts(cfg)
    assert counts["discriminator"] == disc and count_params(cfg) == sum(int(np.prod(v.shape)) for v in flat.values())
    # The reference: ELECTRA-Small's BERT-style discriminator (embeddings with LayerNorm and 2 token
    # types, the 128 -> 256 projection, 12 post-LN layers with biases, the 2-layer head) = 13,549,057,
    # which the paper reports as "14M".  Ours has no biases, RMS norms and no token types.
    h, e, v, ff = 256, 128, 30522, 1024
    layer = 4 * (h * h + h) + (h * ff + ff) + (ff * h + h) + 2 * 2 * h
    reference = (v + 512 + 2) * e + 2 * e + (e * h + h) + 12 * layer + (h * h + h) + (h + 1)
    assert reference == 13_549_057
    assert abs(disc - reference) / reference < 0.02
    assert round(disc / 1e6) == 14 and abs(disc - 14e6) / 14e6 < 0.04


def test_discriminator_loads_into_an_encoder_only_model():
    model = _model()
    electra = flatten_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    disc = {k: v for k, v in electra.items() if k[0] not in ("generator", "rtd_head")}
    eo_cfg = ModelConfig(**{**CFG.to_dict(), "architecture": "encoder_only"})
    eo = _model(eo_cfg, seed=1)
    eo_flat = flatten_params(nnx.to_pure_dict(nnx.state(eo, nnx.Param)))
    assert {k: v.shape for k, v in disc.items()} == {k: v.shape for k, v in eo_flat.items() if k in disc}
    assert set(eo_flat) - set(disc) == {("encoder", "logits_dense", "kernel")}   # the MLM head only
    # copy the discriminator in by name: the encoder_only model computes the discriminator's hidden states
    state = nnx.state(eo, nnx.Param)
    pure = nnx.to_pure_dict(state)
    for k, v in disc.items():
        node = pure
        for part in k[:-1]:
            node = node[part]
        node[k[-1]] = v
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(eo, state)
    batch = _batch(3)
    want = nnx.jit(lambda m: m.hidden(batch)[0])(eo)
    tokens = batch["encoder_input_tokens"]
    got = nnx.jit(lambda m: m.encoder(m.embed(tokens), self_bias=None, self_mask=m._mask(tokens, None)))(model)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_bad_generator_size_is_one_line():
    with pytest.raises(UserError, match="electra_generator_size"):
        nnx.eval_shape(lambda: build_model(ModelConfig(**{**CFG.to_dict(), "electra_generator_size": 1.5}),
                                           nnx.Rngs(0)))


# --------------------------------------------------------------------------- the real trainer
TRAIN_ARGS = ["--config.model.d_model=32", "--config.model.embedding_size=16", "--config.model.num_heads=4",
              "--config.model.d_kv=8", "--config.model.d_ff=64", "--config.model.num_encoder_layers=1",
              "--config.model.max_position_embeddings=32", "--config.data.feature_lengths.inputs=32",
              "--config.data.batch_size=8", "--config.train.num_steps=12", "--config.train.checkpoint_every=6",
              "--config.train.log_every=1", "--config.train.eval_every=12", "--config.train.eval_steps=1",
              "--config.train.async_checkpointing=False",
              "--config.optimizer.learning_rate=5e-3", "--config.optimizer.warmup_steps=0"]


def _train(workdir):
    """`t5x-lite train --config configs/electra.py:tiny` (made smaller) in a subprocess on one CPU device,
    sharing compiled programs through JAX's persistent cache (the resumed run compiles nothing)."""
    env = jax_cache_env(dict(os.environ))
    env["JAX_NUM_CPU_DEVICES"] = "1"
    cmd = [sys.executable, "-m", "t5x_lite.cli", "train", "--config", os.path.join(REPO, "configs", "electra.py:tiny"),
           "--workdir", str(workdir), *TRAIN_ARGS]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r for r in rows if "loss" in r}, {r["step"]: r for r in rows if "eval/loss" in r}


def test_tiny_trains_lowers_the_loss_and_resumes_bit_exactly(tmp_path):
    ref, res = tmp_path / "ref", tmp_path / "resumed"
    train, evals = _train(ref)
    assert sorted(train) == list(range(1, 13)) and sorted(evals) == [12]
    assert np.mean([train[s]["loss"] for s in (10, 11, 12)]) < 0.8 * np.mean([train[s]["loss"] for s in (1, 2, 3)])
    for name in ("gen_mlm_loss", "gen_mlm_accuracy", "rtd_loss", "rtd_accuracy", "replaced_fraction"):
        assert np.isfinite(train[12][name])
        assert np.isfinite(evals[12][f"eval/{name}"])   # the eval step: sampling keyed by the batch
    assert 0 < train[12]["replaced_fraction"] < 0.3
    # resume from the step-6 checkpoint in a fresh workdir: steps 7..12 replay bit for bit
    shutil.copytree(ref / "checkpoints" / "6", res / "checkpoints" / "6")
    resumed, resumed_evals = _train(res)
    assert sorted(resumed) == list(range(7, 13))
    assert all(resumed[s]["loss"] == train[s]["loss"] for s in resumed)
    assert resumed_evals[12]["eval/loss"] == evals[12]["eval/loss"]
    a = flatten_params(checkpoints.restore_params(str(ref / "checkpoints"), 12))
    b = flatten_params(checkpoints.restore_params(str(res / "checkpoints"), 12))
    assert a.keys() == b.keys() and ("generator", "mlm_head", "bias") in a
    assert all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)
