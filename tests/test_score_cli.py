"""`t5x-lite score` against independent references.

- encoder-decoder: the HF golden logits (tests/fixtures/hf_t5_1_1, made by transformers; see
  tools/make_hf_fixtures.py) -> numpy log-softmax at the target ids;
- decoder-only (causal and prefix LM): a manual computation from model_logits on the full sequence.
"""

import json
import os

import numpy as np
import pytest

from t5x_lite import cli

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def run_cli(capsys, *args):
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def t5_ckpt(tmp_path_factory):
    ckpt = str(tmp_path_factory.mktemp("score") / "t5_1_1")
    assert cli.main(["convert", "hf-to-t5x", "--input", os.path.join(FIXTURES, "hf_t5_1_1"), "--output", ckpt]) == 0
    return ckpt


@pytest.fixture(scope="module")
def lm_ckpts(tmp_path_factory):
    """A tiny decoder-only model saved twice (causal LM and prefix LM, same params) with the byte vocabulary."""
    from flax import nnx
    from t5x_lite.data import get_vocabulary
    from t5x_lite.models import ModelConfig, build_model
    from t5x_lite.checkpoints import save_params_checkpoint
    root = tmp_path_factory.mktemp("lm")
    vocab = get_vocabulary("byte")
    out = {}
    params = None
    for mask in ("causal", "prefix"):
        cfg = ModelConfig(architecture="decoder_only", vocab_size=vocab.vocab_size, d_model=32, num_heads=2, d_kv=8,
                          d_ff=64, num_encoder_layers=1, num_decoder_layers=2, mlp_activations=("gelu", "linear"),
                          decoder_mask=mask)
        if params is None:
            model = build_model(cfg, nnx.Rngs(7))
            params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        else:   # same params, prefix mask: no second random init
            graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(7))))
            nnx.replace_by_pure_dict(state, params)
            model = nnx.merge(graphdef, state)
        path = str(root / mask)
        save_params_checkpoint(path, params, {"model": cfg.to_dict(), "vocabulary": "byte"})
        out[mask] = (path, cfg, model)
    return out


def test_encdec_scores_equal_hf_log_softmax(t5_ckpt, tmp_path, capsys):
    ref = dict(np.load(os.path.join(FIXTURES, "hf_t5_1_1", "reference.npz")))
    enc, tgt, w = ref["encoder_input_ids"], ref["decoder_target_tokens"], ref["decoder_loss_weights"] > 0
    rows, expected = [], []
    for r in range(2):
        inputs = [int(t) for t in enc[r] if t != 0]
        targets = [int(t) for t in tgt[r][w[r]]]
        rows.append({"inputs": inputs, "targets": targets, "id": r})
        lp = log_softmax(ref["logits"][r])[np.arange(len(targets)), targets]
        expected.append(lp)
    # A prefix of row 0's targets scores as the prefix of row 0's log-probs (causal decoder).
    rows.append({"inputs": rows[0]["inputs"], "targets": rows[0]["targets"][:5], "id": 2})
    expected.append(expected[0][:5])
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    results = {}
    for bs in (3, 1):
        out = str(tmp_path / f"out{bs}.jsonl")
        code, stdout, _ = run_cli(capsys, "score", "--checkpoint", t5_ckpt, "--input", src, "--output", out,
                                  "--batch-size", str(bs))
        assert code == 0 and "scored 3 examples" in stdout
        results[bs] = read_jsonl(out)
        for rec, row, exp in zip(results[bs], rows, expected):
            assert {k: rec[k] for k in row} == row                  # the input object is kept
            np.testing.assert_allclose(rec["token_log_probs"], exp, atol=1e-4)
            assert rec["log_likelihood"] == pytest.approx(float(np.sum(rec["token_log_probs"])), abs=1e-9)
            assert rec["log_likelihood"] == pytest.approx(float(exp.sum()), abs=1e-3)
    # Batching invariance: batch size 1 and 3 give the same numbers.
    for a, b in zip(results[1], results[3]):
        np.testing.assert_allclose(a["token_log_probs"], b["token_log_probs"], atol=1e-5)


def _manual_lm_scores(model, cfg, inputs, targets):
    """log p(targets | inputs) from one unbatched model_logits call on BOS + inputs + targets."""
    from flax import nnx
    from t5x_lite.models import model_logits
    seq = np.array([list(inputs) + list(targets)], np.int32)
    dec_in = np.concatenate([[[0]], seq[:, :-1]], 1).astype(np.int32)
    batch = {"decoder_input_tokens": dec_in, "decoder_target_tokens": seq}
    if cfg.decoder_mask == "prefix":
        causal = np.zeros_like(seq)
        causal[0, :len(inputs) + 1] = 1
        batch["decoder_causal_attention"] = causal
    lp = log_softmax(np.asarray(nnx.jit(model_logits)(model, batch))[0])
    pos = np.arange(len(inputs), len(inputs) + len(targets))
    return lp[pos, seq[0, pos]]


@pytest.mark.slow
def test_decoder_only_scores_equal_manual_model_logits(lm_ckpts, tmp_path, capsys):
    from t5x_lite.data import get_vocabulary
    vocab = get_vocabulary("byte")
    rows = [
        {"inputs": "translate: cat", "targets": "Katze"},          # strings: byte vocab + EOS
        {"inputs": [40, 41, 42], "targets": [50, 51, 1]},           # ids: used as given
        {"targets": "just a language-model line"},                 # no inputs: whole sequence scored
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    scored = {}
    for mask, (path, cfg, model) in lm_ckpts.items():
        out = str(tmp_path / f"{mask}.jsonl")
        code, _, _ = run_cli(capsys, "score", "--checkpoint", path, "--input", src, "--output", out,
                             "--batch-size", "3", "--no-progress")
        assert code == 0
        scored[mask] = read_jsonl(out)
        for rec, row in zip(scored[mask], rows):
            inputs = row.get("inputs", [])
            inputs = vocab.encode(inputs) + [1] if isinstance(inputs, str) else inputs
            targets = row["targets"]
            if isinstance(targets, str):
                targets = vocab.encode(targets) + [1]
                assert rec["target_ids"] == targets and targets[-1] == 1
            else:
                assert "target_ids" not in rec
            assert len(rec["token_log_probs"]) == len(targets)
            np.testing.assert_allclose(rec["token_log_probs"], _manual_lm_scores(model, cfg, inputs, targets),
                                       atol=1e-4)
    # The prefix LM's full attention over the inputs changes the scores of rows that have inputs.
    assert abs(scored["prefix"][0]["log_likelihood"] - scored["causal"][0]["log_likelihood"]) > 1e-3


@pytest.mark.parametrize("line, message", [
    ({"inputs": [5, 6], "targets": [7, 128]}, "line 2: targets has token id 128 outside [0, 128)"),
    ({"inputs": [5, -1], "targets": [7]}, "line 2: inputs has token id -1 outside [0, 128)"),
    ({"inputs": "text", "targets": [7]}, "line 2: inputs is a string but the checkpoint has no vocabulary"),
    ({"inputs": [5], "targets": []}, "line 2: targets is empty"),
    ({"inputs": [5]}, "line 2: missing 'targets'"),
    ({"inputs": [5], "targets": [7.5]}, "line 2: targets must be a string or a list of integer token ids"),
    ("{oops", ":2: invalid JSON"),
])
def test_bad_lines(t5_ckpt, tmp_path, capsys, line, message):
    src = write_jsonl(tmp_path / "in.jsonl", [{"inputs": [5, 6, 1], "targets": [7, 1]}, line])
    out = tmp_path / "out.jsonl"
    code, _, err = run_cli(capsys, "score", "--checkpoint", t5_ckpt, "--input", src, "--output", str(out))
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_corrupt_checkpoint(t5_ckpt, tmp_path, capsys):
    import shutil
    src = write_jsonl(tmp_path / "in.jsonl", [{"inputs": [5], "targets": [7]}])
    bad = tmp_path / "bad"
    shutil.copytree(t5_ckpt, bad)
    for root, _, files in os.walk(bad / "0" / "params"):
        for name in files:
            if os.path.getsize(os.path.join(root, name)) > 1024:
                with open(os.path.join(root, name), "w") as f:
                    f.write("garbage")
    code, _, err = run_cli(capsys, "score", "--checkpoint", str(bad), "--input", src, "--output",
                           str(tmp_path / "o.jsonl"))
    assert code == 2 and err.count("\n") == 1 and "/0 is damaged: params/ cannot be read" in err, err
    (bad / "0" / "config" / "metadata").write_text("{broken")
    code, _, err = run_cli(capsys, "score", "--checkpoint", str(bad), "--input", src, "--output",
                           str(tmp_path / "o.jsonl"))
    assert code == 2 and "cannot read config" in err, err


def test_bad_checkpoints(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"inputs": [5], "targets": [7]}])
    out = str(tmp_path / "out.jsonl")
    code, _, err = run_cli(capsys, "score", "--checkpoint", str(tmp_path / "nope"), "--input", src, "--output", out)
    assert code == 2 and "checkpoint directory not found" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "score", "--checkpoint", str(tmp_path / "empty"), "--input", src, "--output", out)
    assert code == 2 and "no complete checkpoint" in err
    # An encoder-only (MLM) checkpoint has no sequence likelihood to score.
    from t5x_lite.models import ModelConfig
    from t5x_lite.checkpoints import save_params_checkpoint
    from t5x_lite.loading import abstract_params
    import jax
    cfg = ModelConfig(architecture="encoder_only", vocab_size=64, d_model=16, num_heads=2, d_kv=8, d_ff=32,
                      num_encoder_layers=1, num_decoder_layers=0)
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_params(cfg))
    save_params_checkpoint(str(tmp_path / "mlm"), params, {"model": cfg.to_dict(), "vocabulary": None})
    code, _, err = run_cli(capsys, "score", "--checkpoint", str(tmp_path / "mlm"), "--input", src, "--output", out)
    assert code == 2 and "score supports encoder_decoder and decoder_only models" in err
    # Params that do not fit the stored model config.
    cfg2 = ModelConfig(architecture="encoder_only", vocab_size=64, d_model=16, num_heads=2, d_kv=8, d_ff=32,
                       num_encoder_layers=2, num_decoder_layers=0)
    cfg2.architecture = "decoder_only"
    save_params_checkpoint(str(tmp_path / "bad"), params, {"model": cfg2.to_dict(), "vocabulary": None})
    code, _, err = run_cli(capsys, "score", "--checkpoint", str(tmp_path / "bad"), "--input", src, "--output", out)
    assert code == 2 and "do not match its model config" in err
