"""Training checkpoints: restore onto a different mesh, and init_checkpoint from a
params-only (converter-style) checkpoint."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from t5x_lite import partitioning
from t5x_lite.errors import UserError
from t5x_lite.models.config import ModelConfig
from t5x_lite import checkpoints
from t5x_lite.train import optimizers, step as step_lib
from t5x_lite.train.main import parse_args

MODEL = ModelConfig(vocab_size=128, d_model=64, num_heads=2, d_kv=16, d_ff=128, num_encoder_layers=1,
                    num_decoder_layers=1)
ADAFACTOR = {"name": "adafactor", "schedule": "constant", "learning_rate": 0.01, "min_dim_size_to_factor": 32}


@pytest.mark.slow
def test_restore_on_a_different_mesh_gives_identical_values(tmp_path):
    bundle = step_lib.bundle_from_config(MODEL)
    tx, _ = optimizers.make_optimizer(ADAFACTOR, 10)
    mesh8 = partitioning.make_mesh({"data": 8, "fsdp": 1, "tensor": 1})
    abstract, specs8 = step_lib.state_specs(bundle, tx, mesh8)
    state = step_lib.init_state(bundle, tx, partitioning.named(mesh8, specs8), seed=3)
    # make the optimizer state non-trivial so the comparison covers it too
    grads = jax.tree.map(lambda p: np.ones(p.shape, p.dtype), state["params"])
    _, opt_state = tx.update(grads, state["opt_state"], state["params"])
    state = {"params": state["params"], "opt_state": opt_state, "step": state["step"]}
    ck = checkpoints.TrainCheckpointer(str(tmp_path / "ck"), keep=2)
    ck.save(7, state, {"process_count": 1, "states": [{"pos": 7}]}, {"model": MODEL.to_dict()})
    ck.close()

    mesh222 = partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    _, specs222 = step_lib.state_specs(bundle, tx, mesh222)
    target = step_lib.abstract_with_shardings(abstract, partitioning.named(mesh222, specs222))
    ck = checkpoints.TrainCheckpointer(str(tmp_path / "ck"), keep=2)
    assert ck.latest_step() == 7
    restored, data_state, config = ck.restore(7, target)
    ck.close()
    assert data_state == {"process_count": 1, "states": [{"pos": 7}]} and config["model"]["d_model"] == 64
    assert int(restored["step"]) == 7
    emb = restored["params"]["token_embedder"]["embedding"]
    assert emb.sharding.spec == P("tensor", "fsdp") and emb.sharding.mesh.shape["tensor"] == 2
    n = 0
    for a, b in zip(jax.tree.leaves(state["params"]) + jax.tree.leaves(state["opt_state"]),
                    jax.tree.leaves(restored["params"]) + jax.tree.leaves(restored["opt_state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        n += 1
    assert n > 10


@pytest.mark.slow
def test_restore_of_a_different_model_is_a_user_error(tmp_path):
    bundle = step_lib.bundle_from_config(MODEL)
    tx, _ = optimizers.make_optimizer(ADAFACTOR, 10)
    mesh = partitioning.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    abstract, specs = step_lib.state_specs(bundle, tx, mesh)
    state = step_lib.init_state(bundle, tx, partitioning.named(mesh, specs), seed=0)
    ck = checkpoints.TrainCheckpointer(str(tmp_path / "ck"))
    ck.save(1, state, {}, {})
    ck.close()
    other = step_lib.bundle_from_config(ModelConfig(**{**MODEL.to_dict(), "d_ff": 96}))
    abstract2, specs2 = step_lib.state_specs(other, tx, mesh)
    ck = checkpoints.TrainCheckpointer(str(tmp_path / "ck"))
    with pytest.raises(UserError):
        ck.restore(1, step_lib.abstract_with_shardings(abstract2, partitioning.named(mesh, specs2)))
    ck.close()


@pytest.mark.slow
def test_init_checkpoint_loads_converter_style_params(tmp_path):
    """A params-only step-0 checkpoint (what `t5x-lite convert hf-to-t5x` writes) seeds training;
    the evaluator hook sees the model and its best step is kept."""
    from t5x_lite.train.loop import train

    config, _ = parse_args([
        "--config.model.d_model=32", "--config.model.num_heads=2", "--config.model.d_kv=16",
        "--config.model.d_ff=64", "--config.model.num_encoder_layers=1", "--config.model.num_decoder_layers=1",
        "--config.data.feature_lengths.inputs=32", "--config.data.feature_lengths.targets=8",
        "--config.data.batch_size=8", "--config.train.eval_every=1", "--config.train.eval_steps=1",
        "--config.train.num_steps=1",
        "--config.train.checkpoint_every=1", "--config.optimizer.learning_rate=1e-20", "--config.seed=1"])
    from t5x_lite.train.config import resolve
    model_cfg, resolved = resolve(config)
    # "pretrained" params: a model initialised with another seed, as host numpy arrays
    bundle = step_lib.bundle_from_config(model_cfg)
    from flax import nnx
    with nnx.use_eager_sharding(False):
        pretrained = nnx.state(bundle.build(nnx.Rngs(123)), nnx.Param).to_pure_dict()
    pretrained = jax.tree.map(np.asarray, pretrained)
    checkpoints.save_params_checkpoint(str(tmp_path / "converted"), pretrained,
                                       {"model": model_cfg.to_dict(), "vocabulary": "builtin"}, step=0)
    with config.unlocked():
        config.init_checkpoint = str(tmp_path / "converted")
    calls = []

    def evaluator(step, model):
        calls.append(step)
        emb = np.asarray(model.token_embedder.embedding[...])
        return {"toy/emb_mean": float(np.abs(emb).mean())}

    assert train(config, str(tmp_path / "ft"), evaluators=[evaluator], show_progress=False) == 0
    assert calls == [1]
    import json
    best = json.load(open(tmp_path / "ft" / "best_checkpoints.json"))
    assert best["eval/toy/emb_mean"]["step"] == 1 and "eval/loss" in best
    assert best["eval/toy/emb_mean"]["value"] == pytest.approx(
        float(np.abs(pretrained["token_embedder"]["embedding"]).mean()), rel=1e-6)
    kept = checkpoints.restore_params(str(tmp_path / "ft" / best["eval/toy/emb_mean"]["checkpoint"]))
    rows = [json.loads(line) for line in open(tmp_path / "ft" / "metrics.jsonl")]
    assert any("eval/toy/emb_mean" in r and "eval/loss" in r for r in rows)
    trained = checkpoints.restore_params(str(tmp_path / "ft" / "checkpoints"), 1)
    # lr 1e-20: one update leaves the loaded params unchanged in float32
    for a, b, c in zip(jax.tree.leaves(pretrained), jax.tree.leaves(trained), jax.tree.leaves(kept), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    with config.unlocked():
        config.init_checkpoint = str(tmp_path / "missing")
    with pytest.raises(UserError):
        train(config, str(tmp_path / "ft2"), show_progress=False)
