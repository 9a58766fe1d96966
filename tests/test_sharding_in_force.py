"""The trainer's real train step, lowered and compiled on 8 emulated CPU devices
(data=2, fsdp=2, tensor=2): the activation sharding constraints of the logical
rules are in its program, and the parameters are sharded as the rules say.
Decoding runs inside the same context, batch 1 included (a batch the mesh's
batch axes do not divide is replicated instead of sharded)."""

import re

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from t5x_lite import decoding, partitioning
from t5x_lite.models import ModelConfig, build_model
from t5x_lite.train import optimizers, step as step_lib

CFG = ModelConfig(architecture="encoder_decoder", vocab_size=128, d_model=32, num_heads=4, d_kv=8, d_ff=64,
                  num_encoder_layers=1, num_decoder_layers=1)
BATCH, LIN, LT = 8, 16, 8
# A constraint in the lowered program: `sdy.sharding_constraint` (Shardy) or the `@Sharding`
# custom call (GSPMD), whichever partitioner this JAX uses.
CONSTRAINT = re.compile(r"sdy\.sharding_constraint|custom_call @Sharding")


@pytest.fixture(scope="module")
def mesh():
    if jax.device_count() < 8:
        pytest.fail("tests/conftest.py should give 8 CPU devices (JAX_NUM_CPU_DEVICES=8)")
    return partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


@pytest.fixture(scope="module")
def train_step(mesh):
    """(train step, abstract sharded state, abstract sharded batch), built as train/loop.py builds them."""
    bundle = step_lib.bundle_from_config(CFG)
    tx, schedule = optimizers.make_optimizer({"name": "adafactor", "schedule": "constant",
                                              "learning_rate": 0.01}, 10)
    abstract, specs = step_lib.state_specs(bundle, tx, mesh)
    shardings = partitioning.named(mesh, specs)
    step = step_lib.make_train_step(bundle, tx, schedule, mesh=mesh, state_shardings=shardings)
    bs = partitioning.batch_sharding(mesh)
    batch = {name: jax.ShapeDtypeStruct((BATCH, length), np.float32 if "weights" in name else np.int32,
                                        sharding=bs)
             for name, length in [("encoder_input_tokens", LIN), ("decoder_input_tokens", LT),
                                  ("decoder_target_tokens", LT), ("decoder_loss_weights", LT)]}
    return step, step_lib.abstract_with_shardings(abstract, shardings), batch


def _constraints(text):
    return [line for line in text.splitlines() if CONSTRAINT.search(line)]


def test_activation_constraints_are_in_the_train_step(train_step):
    step, state, batch = train_step
    bare = _constraints(step.jitted.lower(state, batch).as_text())     # traced outside the context
    lowered = _constraints(step.lower(state, batch).as_text())        # as the loop calls it
    assert bare == []
    assert len(lowered) > 20
    # batch over (data, fsdp) on [B, L, D] activations, heads over tensor on [B, L, H, K] projections,
    # vocab over tensor on the logits, the embedding table gathered along embed before the lookup
    shapes = {"act": f"tensor<{BATCH}x{LIN}x{CFG.d_model}xf32>",
              "heads": f"tensor<{BATCH}x{LIN}x{CFG.num_heads}x{CFG.d_kv}xf32>",
              "logits": f"tensor<{BATCH}x{LT}x{CFG.vocab_size}xf32>",
              "table": f"tensor<{CFG.vocab_size}x{CFG.d_model}xf32>"}
    want = {"act": ("data", "fsdp"), "heads": ("data", "fsdp", "tensor"), "logits": ("data", "fsdp", "tensor"),
            "table": ("tensor",)}
    for kind, shape in shapes.items():
        hits = [line for line in lowered if line.rstrip().endswith(shape)]
        assert hits, kind
        assert all(f'"{axis}"' in hits[0] for axis in want[kind]), (kind, hits[0])
    assert not any('"fsdp"' in line for line in lowered if line.rstrip().endswith(shapes["table"]))


def test_compiled_step_keeps_params_sharded_as_the_rules_say(train_step):
    step, state, batch = train_step
    compiled = step.lower(state, batch).compile()
    state_in, _ = compiled.input_shardings[0]
    state_out, _ = compiled.output_shardings

    def spec(tree, *path):
        for key in path:
            tree = tree[key]
        s = tuple(tree.spec)
        while s and s[-1] is None:
            s = s[:-1]
        return P(*s)

    expect = {
        ("token_embedder", "embedding"): P("tensor", "fsdp"),                               # (vocab, embed)
        ("encoder", "layers_0", "attention", "query", "kernel"): P("fsdp", "tensor"),        # (embed, heads, kv)
        ("decoder", "layers_0", "self_attention", "out", "kernel"): P("tensor", None, "fsdp"),
        ("encoder", "layers_0", "mlp", "wi_0", "kernel"): P("fsdp", "tensor"),               # (embed, mlp)
        ("decoder", "layers_0", "mlp", "wo", "kernel"): P("tensor", "fsdp"),                 # (mlp, embed)
    }
    for path, want in expect.items():
        assert spec(state_in["params"], *path) == want, path
        assert spec(state_out["params"], *path) == want, path
    # each device holds 1/4 of the embedding table (vocab/2 x embed/2)
    emb = state_in["params"]["token_embedder"]["embedding"]
    assert emb.shard_shape((CFG.vocab_size, CFG.d_model)) == (CFG.vocab_size // 2, CFG.d_model // 2)
    # the partitioner had to move data between devices: FSDP gathers params, the batch axes reduce grads
    hlo = compiled.as_text()
    assert re.search(r"\ball-gather(-start)?\(", hlo) and re.search(r"\ball-reduce(-start)?\(", hlo)


@pytest.mark.slow
def test_decoding_one_prompt_inside_the_context_matches_one_device(mesh):
    model = build_model(CFG, nnx.Rngs(0))
    prompt = decoding.make_prompt("encoder_decoder", [[5, 6, 7, 8, 1]])
    ref, ref_scores = decoding.decode(model, prompt, max_decode_length=4, return_scores=True)
    out, scores = decoding.decode(model, prompt, max_decode_length=4, return_scores=True, mesh=mesh)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5, rtol=0)
    # the decode program traced inside the context carries the constraints: heads over tensor,
    # and the batch of 1, which data*fsdp = 4 does not divide, replicated
    args = (model, {k: jax.numpy.asarray(v) for k, v in prompt.items()}, jax.random.key(0))
    kw = dict(method="greedy", max_decode_length=4, beam_size=4, alpha=0.6, temperature=1.0, top_k=0,
              top_p=1.0, eos_id=1, finish_rule="t5x")
    with partitioning.activate(mesh):
        lowered = _constraints(decoding._decode_jit.lower(*args, **kw).as_text())
    assert any('"tensor"' in line for line in lowered)
    assert not any('"data", "fsdp"' in line for line in lowered)
