"""Hugging Face T5 <-> t5x_lite conversion against golden files made by transformers.

The fixtures under tests/fixtures/hf_t5_1_{0,1}/ were written by tools/make_hf_fixtures.py with
torch 2.13.0 + transformers 5.24.0 (see their reference.json): the model files and the logits of
HF's own forward pass.  Nothing here imports torch.  (Greedy/beam parity with HF's generate() on the
same fixtures is tested in tests/test_decoding_hf_parity.py.)
"""

import json
import os
import shutil

import numpy as np
import pytest
import safetensors.numpy

from t5x_lite import cli
from t5x_lite.convert import hf_to_t5x_params, read_hf_dir

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
VERSIONS = ("hf_t5_1_0", "hf_t5_1_1")


def run_cli(capsys, *args):
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


class _Converted(dict):
    """Fixtures converted through the CLI on first use: {name: checkpoint dir}."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, name):
        ckpt = str(self.root / name)
        assert cli.main(["convert", "hf-to-t5x", "--input", os.path.join(FIXTURES, name), "--output", ckpt]) == 0
        self[name] = ckpt
        return ckpt


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return _Converted(tmp_path_factory.mktemp("converted"))


def load_model(ckpt):
    from t5x_lite.loading import load_model   # params restored onto an abstract model
    loaded = load_model(ckpt)
    return loaded.model_config, loaded.model, loaded.config


def reference(name):
    return dict(np.load(os.path.join(FIXTURES, name, "reference.npz")))


@pytest.mark.parametrize("name", VERSIONS)
def test_logits_match_hf(converted, name):
    from t5x_lite.models import model_logits
    cfg, model, config = load_model(converted[name])
    ref = reference(name)
    meta = json.load(open(os.path.join(FIXTURES, name, "reference.json")))
    # The config says what kind of T5 it is.
    assert cfg.architecture == "encoder_decoder" and config["vocabulary"] is None
    if meta["feed_forward_proj"] == "relu":
        assert cfg.mlp_activations == ("relu",) and cfg.tie_embeddings
    else:
        assert cfg.mlp_activations == ("gelu", "linear") and not cfg.tie_embeddings
        assert cfg.num_decoder_layers == 3 and cfg.num_encoder_layers == 2
    batch = {
        "encoder_input_tokens": ref["encoder_input_ids"].astype(np.int32),
        "decoder_input_tokens": ref["decoder_input_tokens"].astype(np.int32),
        "decoder_target_tokens": ref["decoder_target_tokens"].astype(np.int32),
        "decoder_loss_weights": ref["decoder_loss_weights"],
    }
    from flax import nnx
    logits = np.asarray(nnx.jit(model_logits)(model, batch))
    real = ref["decoder_loss_weights"] > 0          # padded decoder positions are not compared
    assert logits.dtype == np.float32 and logits.shape == ref["logits"].shape
    err = np.abs(logits - ref["logits"])[real].max()
    assert err < 1e-4, err
    # The reference is not trivially matched: the two rows and the two models differ a lot.
    assert np.abs(ref["logits"][0] - ref["logits"][1]).max() > 0.1


@pytest.mark.parametrize("name", VERSIONS)
def test_round_trip_is_byte_identical(converted, name, tmp_path, capsys):
    out = str(tmp_path / "hf")
    code, stdout, _ = run_cli(capsys, "convert", "t5x-to-hf", "--input", converted[name], "--output", out)
    assert code == 0 and "wrote" in stdout
    a = safetensors.numpy.load_file(os.path.join(FIXTURES, name, "model.safetensors"))
    b = safetensors.numpy.load_file(os.path.join(out, "model.safetensors"))
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes(), k
    orig = json.load(open(os.path.join(FIXTURES, name, "config.json")))
    new = json.load(open(os.path.join(out, "config.json")))
    for key in ("model_type", "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers",
                "num_heads", "relative_attention_num_buckets", "relative_attention_max_distance",
                "feed_forward_proj", "dense_act_fn", "is_gated_act", "layer_norm_epsilon", "pad_token_id",
                "eos_token_id", "decoder_start_token_id", "scale_decoder_outputs", "is_encoder_decoder"):
        assert new[key] == orig[key], key
    gen = json.load(open(os.path.join(out, "generation_config.json")))
    assert gen["decoder_start_token_id"] == 0 and gen["eos_token_id"] == 1
    # every file gets the user's umask (safetensors' own save_file leaves 0600), no temporary is left
    umask = os.umask(0)
    os.umask(umask)
    for f in ("model.safetensors", "config.json", "generation_config.json"):
        assert os.stat(os.path.join(out, f)).st_mode & 0o777 == 0o666 & ~umask, f
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors"]
    # Converting the export again gives the same t5x params.
    p1, c1 = hf_to_t5x_params(*reversed(read_hf_dir(out)))
    p0, c0 = hf_to_t5x_params(*reversed(read_hf_dir(os.path.join(FIXTURES, name))))
    assert c0 == c1
    import jax
    assert jax.tree.all(jax.tree.map(np.array_equal, p0, p1))


def test_scaled_logits_with_separate_lm_head_folds_the_scale():
    """transformers-5 semantics: scale_decoder_outputs + a distinct lm_head -> untied kernel * d_model**-0.5."""
    cfg_json, tensors = read_hf_dir(os.path.join(FIXTURES, "hf_t5_1_0"))
    head = np.random.default_rng(0).standard_normal(tensors["shared.weight"].shape).astype(np.float32)
    params, cfg = hf_to_t5x_params(dict(tensors, **{"lm_head.weight": head}), cfg_json)
    assert not cfg.tie_embeddings
    np.testing.assert_allclose(params["decoder"]["logits_dense"]["kernel"], head.T * 32 ** -0.5, rtol=1e-6)
    # A tied copy of shared in the file changes nothing.
    params, cfg = hf_to_t5x_params(dict(tensors, **{"lm_head.weight": tensors["shared.weight"].copy(),
                                                    "encoder.embed_tokens.weight": tensors["shared.weight"]}),
                                   cfg_json)
    assert cfg.tie_embeddings and "logits_dense" not in params["decoder"]


def test_mt5_config_is_accepted():
    cfg_json, tensors = read_hf_dir(os.path.join(FIXTURES, "hf_t5_1_1"))
    params, cfg = hf_to_t5x_params(tensors, dict(cfg_json, model_type="mt5"))
    assert cfg.mlp_activations == ("gelu", "linear") and not cfg.tie_embeddings
    np.testing.assert_array_equal(params["decoder"]["logits_dense"]["kernel"], tensors["lm_head.weight"].T)


def test_sharded_safetensors_are_read(tmp_path):
    cfg_json, tensors = read_hf_dir(os.path.join(FIXTURES, "hf_t5_1_0"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for fname, keys in shards.items():
        safetensors.numpy.save_file({k: tensors[k] for k in keys}, str(tmp_path / fname))
    index = {"weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text(json.dumps(cfg_json))
    cfg2, tensors2 = read_hf_dir(str(tmp_path))
    assert sorted(tensors2) == names and all(np.array_equal(tensors[k], tensors2[k]) for k in names)


def test_bfloat16_safetensors_are_read(tmp_path):
    import ml_dtypes
    cfg_json, tensors = read_hf_dir(os.path.join(FIXTURES, "hf_t5_1_1"))
    bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}
    safetensors.numpy.save_file(bf16, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg_json, dtype="bfloat16")))
    cfg2, tensors2 = read_hf_dir(str(tmp_path))
    assert tensors2["shared.weight"].dtype == ml_dtypes.bfloat16
    params, cfg = hf_to_t5x_params(tensors2, cfg2)
    kernel = params["decoder"]["logits_dense"]["kernel"]
    assert kernel.dtype == np.float32     # cast to the model's param_dtype
    np.testing.assert_array_equal(kernel, bf16["lm_head.weight"].astype(np.float32).T)


def _copy_fixture(tmp_path, name="hf_t5_1_1"):
    dst = tmp_path / "hf"
    shutil.copytree(os.path.join(FIXTURES, name), dst)
    return dst


def _edit_config(d, **changes):
    cfg = json.load(open(d / "config.json"))
    cfg.update(changes)
    json.dump(cfg, open(d / "config.json", "w"))


def _edit_tensors(d, drop=(), add=None):
    t = safetensors.numpy.load_file(str(d / "model.safetensors"))
    for k in drop:
        del t[k]
    t.update(add or {})
    safetensors.numpy.save_file(t, str(d / "model.safetensors"))


@pytest.mark.parametrize("case, message", [
    ("missing_dir", "directory not found"),
    ("no_config", "has no config.json"),
    ("no_weights", "has no model.safetensors"),
    ("not_t5", "only 't5' (and 'mt5') checkpoints"),
    ("bad_json", "cannot parse"),
    ("shape_mismatch", "does not match model.safetensors"),
    ("missing_key", "lacks 1 T5 weights the config implies: decoder.block.2.layer.2.DenseReluDense.wo.weight"),
    ("unknown_key", "not part of this T5 config: encoder.block.9.layer.0.SelfAttention.q.weight"),
    ("bad_activation", "unsupported activation 'tanh'"),
    ("bad_proj", "unsupported feed_forward_proj"),
    ("corrupt_weights", "cannot read"),
])
def test_hf_to_t5x_errors(tmp_path, capsys, case, message):
    d = _copy_fixture(tmp_path)
    if case == "missing_dir":
        d = tmp_path / "nope"
    elif case == "no_config":
        os.remove(d / "config.json")
    elif case == "no_weights":
        os.remove(d / "model.safetensors")
    elif case == "not_t5":
        _edit_config(d, model_type="bart")
    elif case == "bad_json":
        (d / "config.json").write_text("{not json")
    elif case == "shape_mismatch":
        _edit_config(d, d_ff=48)
    elif case == "missing_key":
        _edit_tensors(d, drop=["decoder.block.2.layer.2.DenseReluDense.wo.weight"])
    elif case == "unknown_key":
        _edit_tensors(d, add={"encoder.block.9.layer.0.SelfAttention.q.weight": np.zeros((32, 32), np.float32)})
    elif case == "bad_activation":
        _edit_config(d, feed_forward_proj="gated-tanh")
    elif case == "bad_proj":
        _edit_config(d, feed_forward_proj="double-gated-gelu")
    elif case == "corrupt_weights":
        (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    out = tmp_path / "ckpt"
    code, _, err = run_cli(capsys, "convert", "hf-to-t5x", "--input", str(d), "--output", str(out))
    assert code == 2
    assert err.startswith("t5x-lite convert: error:") and err.count("\n") == 1, err
    assert message in err, err
    assert not (out / "0").exists()


def test_cli_output_and_architecture_errors(converted, tmp_path, capsys):
    # Refuses to write into a non-empty directory without --overwrite.
    code, _, err = run_cli(capsys, "convert", "hf-to-t5x", "--input", os.path.join(FIXTURES, "hf_t5_1_0"),
                           "--output", converted["hf_t5_1_0"])
    assert code == 2 and "not empty" in err
    # A decoder-only checkpoint has no T5ForConditionalGeneration equivalent.
    from t5x_lite.models import ModelConfig
    from t5x_lite.checkpoints import save_params_checkpoint
    cfg = ModelConfig(architecture="decoder_only", vocab_size=64, d_model=16, num_heads=2, d_kv=8, d_ff=32,
                      num_encoder_layers=0, num_decoder_layers=1)
    save_params_checkpoint(str(tmp_path / "lm"), {"token_embedder": {"embedding": np.zeros((64, 16), np.float32)}},
                           {"model": cfg.to_dict(), "vocabulary": None})
    code, _, err = run_cli(capsys, "convert", "t5x-to-hf", "--input", str(tmp_path / "lm"), "--output",
                           str(tmp_path / "hf"))
    assert code == 2 and "converts encoder_decoder models" in err
    code, _, err = run_cli(capsys, "convert", "t5x-to-hf", "--input", str(tmp_path / "missing"), "--output",
                           str(tmp_path / "hf"))
    assert code == 2 and "checkpoint directory not found" in err
    # --help explains itself and exits 0.
    with pytest.raises(SystemExit) as e:
        cli.main(["convert", "hf-to-t5x", "--help"])
    assert e.value.code == 0 and "save_pretrained" in capsys.readouterr().out


def test_scanned_layout_round_trip(tmp_path, capsys):
    """--scan-layers writes the stacked layout a scan_layers=True model restores; t5x-to-hf unscans it."""
    from t5x_lite.loading import abstract_params
    from t5x_lite.models import ModelConfig
    from t5x_lite.checkpoints import read_config, restore_params
    src = os.path.join(FIXTURES, "hf_t5_1_1")
    ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "hf")
    assert run_cli(capsys, "convert", "hf-to-t5x", "--input", src, "--output", ckpt, "--scan-layers")[0] == 0
    cfg = ModelConfig.from_dict(read_config(ckpt)["model"])
    params = restore_params(ckpt)
    assert cfg.scan_layers and params["decoder"]["layers"]["mlp"]["wo"]["kernel"].shape == (3, 64, 32)
    import jax
    shapes = jax.tree.map(lambda a: tuple(a.shape), params)
    assert shapes == jax.tree.map(lambda a: tuple(a.shape), abstract_params(cfg))
    assert run_cli(capsys, "convert", "t5x-to-hf", "--input", ckpt, "--output", out)[0] == 0
    a = safetensors.numpy.load_file(os.path.join(src, "model.safetensors"))
    b = safetensors.numpy.load_file(os.path.join(out, "model.safetensors"))
    assert sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_vocabulary_larger_than_model_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "convert", "hf-to-t5x", "--input", os.path.join(FIXTURES, "hf_t5_1_0"),
                           "--output", str(tmp_path / "c"), "--vocabulary", "byte")
    assert code == 2 and "has 359 ids but the model only 128 embeddings" in err
