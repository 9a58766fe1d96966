"""One config of record: train/default_config.py declares every key once, with its default and a
comment; every key the code reads is declared and settable with --config.KEY=VALUE; validators take
their choices from the modules that own them; named experiments keep their values."""

import glob
import os
import re

import ml_collections
import pytest

from t5x_lite import decoding, partitioning
from t5x_lite.errors import UserError
from t5x_lite.models import table2_configs
from t5x_lite.models.config import ARCHITECTURES, ModelConfig
from t5x_lite.train import config as config_lib, default_config, losses, main as train_main, optimizers

from train_helpers import REPO

PACKAGE = os.path.join(REPO, "t5x_lite")


def _leaves(node, prefix=""):
    for key in node:
        path = prefix + key
        if isinstance(node[key], ml_collections.ConfigDict):
            yield from _leaves(node[key], path + ".")
        else:
            yield path, node[key]


DECLARED = dict(_leaves(default_config.get_config()))


def _config(spec=None):
    return train_main.parse_args(["--config", os.path.join(REPO, "configs", spec)] if spec else [])[0]


def test_model_section_is_model_config_at_its_defaults():
    assert config_lib.to_dict(default_config.get_config().model) == ModelConfig().to_dict()


def test_every_key_has_its_default_and_a_comment_on_one_line():
    lines = open(default_config.__file__).read().splitlines()
    alias = {section: a for ln in lines for section, a in re.findall(r"c\.(\w+) = (\w) = ", ln)}
    for key in DECLARED:
        if key.startswith("data.feature_lengths."):   # one dict-valued key
            key = "data.feature_lengths"
        section, _, name = key.rpartition(".")
        var = alias[section] if section else "c"
        line = next((ln for ln in lines if re.match(rf"\s*{var}\.{name} = ", ln)), None)
        assert line is not None, f"{key} is not assigned on a line of its own"
        assert "#" in line and line.split("#", 1)[1].strip(), f"{key} has no comment"


def _keys_read_by_the_code():
    """config.SECTION.KEY / config.KEY reads anywhere in the package, and the section aliases:
    the loop's `tc.KEY` (config.train), the evaluator's `ev.KEY` (config.evaluation), the train
    logger's `data_cfg.KEY` (config.data) and the optimizer's o["KEY"] (config.optimizer)."""
    found = set()
    for path in glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True):
        text = open(path).read()
        for section, key in re.findall(r"\bconfig\.(model|data|train|optimizer|mesh|evaluation)\.(\w+)", text):
            found.add(f"{section}.{key}")
        found |= {k for k in re.findall(r"\bconfig\.(seed|vocabulary|init_checkpoint)\b", text)}
        for suffix, alias, section in ((os.path.join("train", "loop.py"), "tc", "train"),
                                       ("evaluator.py", "ev", "evaluation"), ("metrics.py", "data_cfg", "data")):
            if path.endswith(suffix):
                found |= {f"{section}.{k}" for k in re.findall(rf"\b{alias}\.(\w+)", text)}
        if path.endswith("optimizers.py"):
            found |= {f"optimizer.{k}" for k in re.findall(r'\bo\["(\w+)"\]', text)}
    return found


def test_every_key_the_code_reads_is_declared():
    read = _keys_read_by_the_code()
    assert {"train.grad_clip", "optimizer.momentum", "optimizer.factored", "train.num_steps", "evaluation.alpha",
            "data.batch_size"} <= read
    missing = sorted(k for k in read if k not in DECLARED and not any(d.startswith(k + ".") for d in DECLARED))
    assert not missing, f"read but not declared in train/default_config.py: {missing}"


def _other_value(value):
    if isinstance(value, bool):
        return str(not value), (not value)
    if isinstance(value, int):
        return str(value + 3), value + 3
    if isinstance(value, float):
        return repr(value * 2 + 0.25), value * 2 + 0.25
    if isinstance(value, tuple):
        return "('relu',)", ("relu",)
    if isinstance(value, list):
        return "['x', 'y']", ["x", "y"]
    return value + "_x", value + "_x"


@pytest.mark.parametrize("key", sorted(DECLARED))
def test_every_declared_key_can_be_set_from_the_command_line(key):
    text, want = _other_value(DECLARED[key])
    config, _ = train_main.parse_args([f"--config.{key}={text}"])
    node = config
    for part in key.split("."):
        node = node[part]
    assert (list(node) if isinstance(want, list) else node) == want


@pytest.mark.parametrize("key, choices", [
    ("train.loss_normalization", losses.NORMALIZATIONS),
    ("optimizer.name", optimizers.NAMES),
    ("optimizer.schedule", optimizers.SCHEDULES),
    ("evaluation.decode", decoding.METHODS),
    ("model.architecture", ARCHITECTURES),
])
def test_validators_take_their_choices_from_the_owning_module(key, choices):
    for choice in choices:                     # every choice the owner offers is accepted ...
        config, _ = train_main.parse_args([f"--config.{key}={choice}"])
        config_lib.validate(config)
    config, _ = train_main.parse_args([f"--config.{key}=bogus"])
    with pytest.raises(UserError) as e:        # ... and the error lists exactly those
        config_lib.validate(config)
    assert "|".join(choices) in str(e.value)


def test_validation_names_undeclared_and_mistyped_keys():
    config = default_config.get_config()
    config.train.num_step = 5                  # a typo in a config file adds a new key
    with pytest.raises(UserError, match="train.num_step is not declared .*did you mean num_steps"):
        config_lib.validate(config)
    config = default_config.get_config()
    with config.unlocked():
        config.train = ml_collections.ConfigDict({**config.train.to_dict(), "log_every": "often"})
    with pytest.raises(UserError, match="train.log_every must be a int"):
        config_lib.validate(config)
    config = default_config.get_config()
    config.mesh.fsdp = -2
    with pytest.raises(UserError, match="mesh.fsdp"):
        config_lib.validate(config)
    assert partitioning.MESH_AXES == tuple(config.mesh.keys())


# Values the presets (train/presets.py, now configs/) resolved to before the redesign.
TODAY = {
    "t5_1_1.py:small": {"model.d_model": 512, "model.num_heads": 6, "model.d_ff": 1024, "model.num_encoder_layers": 8,
                        "model.num_decoder_layers": 8, "model.vocab_size": 32128, "model.dtype": "bfloat16",
                        "model.mlp_activations": ["gelu", "linear"], "model.tie_embeddings": False,
                        "data.batch_size": 128, "data.feature_lengths": {"inputs": 512, "targets": 114},
                        "optimizer.schedule": "rsqrt", "optimizer.learning_rate": 1.0,
                        "optimizer.warmup_steps": 10000, "train.num_steps": 100000, "train.z_loss": 1e-4,
                        "train.loss_normalization": "sum", "mesh.fsdp": 1, "model.remat_policy": "none"},
    "t5_1_1.py:xl": {"model.d_model": 2048, "model.num_heads": 32, "model.d_ff": 5120, "model.num_decoder_layers": 24,
                     "mesh.data": 1, "mesh.fsdp": -1, "model.remat_policy": "full"},
    "t5_1_0_base.py": {"model.d_model": 768, "model.d_ff": 3072, "model.mlp_activations": ["relu"],
                       "model.tie_embeddings": True, "model.dropout_rate": 0.1, "model.num_encoder_layers": 12},
    "decoder_only_lm.py": {"model.architecture": "decoder_only", "model.decoder_mask": "causal",
                           "model.num_decoder_layers": 12, "data.task": "builtin_lm",
                           "data.feature_lengths": {"targets": 512}},
    "prefix_lm.py": {"model.decoder_mask": "prefix", "data.task": "builtin_prefix_lm",
                     "data.feature_lengths": {"inputs": 512, "targets": 512}},
    "table2.py:enc_dec_6_layers": {"model.num_encoder_layers": 6, "model.num_decoder_layers": 6,
                                   "data.task": "builtin_iid_denoising", "train.num_steps": 2 ** 18},
    None: {"model.d_model": 128, "data.batch_size": 16, "train.num_steps": 300, "optimizer.schedule": "constant",
           "optimizer.learning_rate": 0.01, "data.feature_lengths": {"inputs": 128, "targets": 32}},
}


@pytest.mark.parametrize("spec", list(TODAY), ids=str)
def test_named_experiments_keep_their_values(spec):
    resolved = config_lib.to_dict(_config(spec))
    for key, want in TODAY[spec].items():
        got = resolved
        for part in key.split("."):
            got = got[part]
        assert got == want, key


@pytest.mark.parametrize("arch", ["encoder_decoder", "enc_dec_shared", "enc_dec_6_layers", "language_model",
                                  "prefix_lm"])
def test_table2_architectures_are_the_models_table2_configs(arch):
    base = ModelConfig.from_dict(config_lib.to_dict(_config("t5_1_0_base.py").model))
    model = config_lib.to_dict(_config(f"table2.py:{arch}").model)
    assert model == table2_configs(base)[arch].to_dict()


def test_optimizer_takes_every_setting_from_the_config():
    import jax
    import jax.numpy as jnp

    params = {"w": jnp.zeros((256, 256))}

    def state_shapes(**changes):
        tx, _ = optimizers.make_optimizer({**default_config.get_config().optimizer.to_dict(), **changes}, 10)
        return sorted(x.shape for x in jax.tree.leaves(tx.init(params)) if x.ndim)

    plain = state_shapes()
    assert (256, 256) not in plain                                # factored, no momentum (T5)
    assert (256, 256) in state_shapes(factored=False)             # a full second moment
    assert state_shapes(momentum=0.9).count((256, 256)) == 1      # a first moment
    with pytest.raises(UserError, match="unknown optimizer keys: grad_clipping"):
        optimizers.make_optimizer({"grad_clipping": 1.0}, 10)


def test_finetune_experiments_follow_the_paper():
    for task in ("local_translate_en_de", "local_wordnet_lexname", "local_summarize_debian", "local_mixture",
                 "prefix_lm_local_translate_en_de"):
        c = _config(f"finetune.py:{task}")
        config_lib.validate(c)
        assert c.optimizer.schedule == "constant" and c.optimizer.learning_rate == 0.001
        assert c.model.dropout_rate == 0.1 and c.evaluation.decode == "greedy"
        assert c.model.d_model == default_config.get_config().model.d_model   # the shape comes from the checkpoint
    assert _config("finetune.py:local_mixture").evaluation.tasks == (
        "local_translate_en_de", "local_wordnet_lexname", "local_summarize_debian")
    assert _config("finetune.py:prefix_lm_local_translate_en_de").data.task == "local_translate_en_de_lm_format"
    with pytest.raises(UserError, match="finetune.py:TASK must be one of"):
        _config("finetune.py:glue")
