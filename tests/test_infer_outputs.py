"""`t5x-lite infer` output: scores, several sequences per input, stdin/stdout; `--no-progress` on the
long commands.

Every `score` is checked against an independent computation: the teacher-forced log-likelihood of
the same ids under the same checkpoint (t5x_lite.scoring.Scorer, what `t5x-lite score` runs).
"""

import io
import json
from typing import NamedTuple

import numpy as np
import pytest

from t5x_lite import cli, decoding
from t5x_lite.data import get_vocabulary

PROMPTS = ["translate English to German: Open the file.", "The <extra_id_0> of the city <extra_id_1>.", "Save as"]


def run_cli(capsys, *args):
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random encoder-decoder with the shipped vocabulary (random normal params: no init to
    compile), the checkpoint loaded once more for the references, and one Scorer for all of them."""
    import jax

    from t5x_lite import loading
    from t5x_lite.checkpoints import save_params_checkpoint
    from t5x_lite.models import ModelConfig
    from t5x_lite.scoring import Scorer
    root = tmp_path_factory.mktemp("infer_out")
    cfg = ModelConfig(architecture="encoder_decoder", vocab_size=8192, d_model=32, num_heads=2, d_kv=16, d_ff=64,
                      num_encoder_layers=1, num_decoder_layers=1).validate()
    rng = np.random.default_rng(11)
    params = jax.tree.map(lambda a: (rng.normal(size=a.shape) * (a.shape[0] ** -0.5 if len(a.shape) > 1 else 1.0)
                                     ).astype(a.dtype), loading.abstract_params(cfg))
    save_params_checkpoint(str(root / "ckpt"), params, {"model": cfg.to_dict(), "vocabulary": "builtin"})
    src = root / "in.jsonl"
    src.write_text("".join(json.dumps({"inputs": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS)))
    vocab = get_vocabulary("builtin")
    loaded = loading.load_model(str(root / "ckpt"))
    return Setup(str(root / "ckpt"), str(src), loaded, vocab, [vocab.encode(p) + [1] for p in PROMPTS],
                 Scorer(cfg, loaded.model, batch_size=12))


class Setup(NamedTuple):
    ckpt: str
    src: str
    loaded: object
    vocab: object
    prompts: list
    scorer: object


def _reference_decode(setup, **kw):
    """decoding.decode on the same prompts, as infer calls it (one batch of all three, inside the mesh's
    context: the compiled decode is infer's)."""
    from t5x_lite import partitioning
    with partitioning.activate(setup.loaded.mesh):
        return decoding.decode(setup.loaded.model, decoding.make_prompt("encoder_decoder", setup.prompts),
                               max_decode_length=6, **kw)


def _teacher_forced(setup, prompt_ids, answers):
    """Sum of log-probs of each answer given its prompt, from one forward pass (no decoding)."""
    from t5x_lite import partitioning
    pairs, out = list(zip(prompt_ids, answers)), []
    with partitioning.activate(setup.loaded.mesh):
        for i in range(0, len(pairs), 12):
            out += [sum(lp) for lp in setup.scorer.score(pairs[i:i + 12])]
    return out


def _infer(capsys, setup, out, *extra):
    code, _, err = run_cli(capsys, "infer", "--checkpoint", setup.ckpt, "--input", setup.src, "--output", str(out),
                           "--max-decode-length", "6", "--no-progress", *extra)
    assert code == 0, err
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_greedy_rows_carry_the_score(setup, capsys, tmp_path):
    rows = _infer(capsys, setup, tmp_path / "g.jsonl")
    assert [r["id"] for r in rows] == [0, 1, 2] and all("predictions" not in r for r in rows)
    tokens, scores = _reference_decode(setup, return_scores=True)
    for row, toks, s in zip(rows, tokens.tolist(), scores):
        assert row["prediction_ids"] == (toks[: toks.index(1) + 1] if 1 in toks else toks)
        assert row["prediction"] == setup.vocab.decode(toks) and row["score"] == pytest.approx(float(s), abs=1e-5)
    ref = _teacher_forced(setup, setup.prompts, [r["prediction_ids"] for r in rows])
    assert [r["score"] for r in rows] == pytest.approx(ref, abs=1e-4)


def test_beam_returns_the_n_best_beams_with_their_log_probs(setup, capsys, tmp_path):
    rows = _infer(capsys, setup, tmp_path / "b.jsonl", "--decode", "beam", "--beam-size", "4",
                  "--num-return-sequences", "3")
    beams, beam_scores = _reference_decode(setup, method="beam", beam_size=4, all_beams=True, return_scores=True)
    for row, row_beams, row_scores in zip(rows, beams.tolist(), beam_scores):
        preds = row["predictions"]
        assert len(preds) == 3 and {k: row[k] for k in preds[0]} == preds[0]     # top level = the best beam
        assert [p["prediction_ids"] for p in preds] == [b[: b.index(1) + 1] if 1 in b else b for b in row_beams[:3]]
        assert [p["prediction"] for p in preds] == [setup.vocab.decode(b) for b in row_beams[:3]]
        # score is the plain log-prob: a finished beam's beam score is it over T5X's brevity penalty
        # (alpha 0.6), a row where nothing finished returns its live beams with their plain log-probs
        for p, s in zip(preds, row_scores):
            ended = p["prediction_ids"][-1] == 1
            assert p["score"] / (((5 + len(p["prediction_ids"])) / 6) ** 0.6 if ended else 1) == pytest.approx(
                float(s), abs=1e-4)
    answers = [p["prediction_ids"] for r in rows for p in r["predictions"]]
    ref = _teacher_forced(setup, [p for p in setup.prompts for _ in range(3)], answers)
    assert [p["score"] for r in rows for p in r["predictions"]] == pytest.approx(ref, abs=1e-4)


def test_beam_log_probs_on_the_toy_lm():
    """DecodeResult.log_probs against brute force on test_decoding_toy's LM, with beams that finish
    (an EOS boost): each returned beam's log-prob is its sequence's, and a finished beam's score is
    that over the brevity penalty."""
    from test_decoding_toy import EOS, Toy, bp, jitted, make_table
    toy, start, K, L = Toy(make_table(6, seed=4, eos_boost=1.0)), np.array([3, 17, 60], np.int32), 3, 5
    logits0, state = toy.init(start)
    # finish_rule hf: EOS candidates finish (extend) and live beams join at the limit (t5x's rows where
    # nothing finished are the random model's in test_beam_returns_the_n_best_beams_with_their_log_probs)
    out = jitted(lambda l, s, **kw: decoding.beam_search(l, s, toy.step, **kw), logits0, state,
                 max_decode_length=L, beam_size=K, alpha=0.6, finish_rule="hf")
    tokens, scores, log_probs = (np.asarray(x) for x in out)
    ended = 0
    for b in range(len(start)):
        for k in range(K):
            seq = tokens[b, k].tolist()
            seq = seq[: seq.index(EOS) + 1] if EOS in seq else seq
            ended += EOS in seq
            assert log_probs[b, k] == pytest.approx(toy.seq_logprob(int(start[b]), seq), abs=1e-4)
            assert scores[b, k] == pytest.approx(log_probs[b, k] / bp(0.6, len(seq)), abs=1e-4)
    assert 4 <= ended < len(start) * K, ended     # both kinds among the returned beams


def test_sampling_returns_n_samples_with_their_log_probs(setup, capsys, tmp_path):
    args = ("--decode", "sample", "--temperature", "1.5", "--num-return-sequences", "4", "--seed", "3")
    rows = _infer(capsys, setup, tmp_path / "s.jsonl", *args)
    assert rows == _infer(capsys, setup, tmp_path / "s2.jsonl", *args)        # same seed, same samples
    for row in rows:
        assert len(row["predictions"]) == 4 and row["prediction_ids"] == row["predictions"][0]["prediction_ids"]
    samples = [p["prediction_ids"] for r in rows for p in r["predictions"]]
    assert len({tuple(s) for s in samples}) > len(rows)          # a random model at T=1.5: not all alike
    ref = _teacher_forced(setup, [p for p in setup.prompts for _ in range(4)], samples)
    assert [p["score"] for r in rows for p in r["predictions"]] == pytest.approx(ref, abs=1e-4)


def test_stdin_to_stdout(setup, capsys, monkeypatch):
    ckpt = setup.ckpt
    monkeypatch.setattr("sys.stdin", io.StringIO(open(setup.src).read()))
    code, out, err = run_cli(capsys, "infer", "--checkpoint", ckpt, "--input", "-", "--output", "-",
                             "--max-decode-length", "6")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]        # stdout is the JSONL and nothing else
    assert [r["inputs"] for r in rows] == PROMPTS and all(np.isfinite(r["score"]) for r in rows)
    assert "wrote 3 predictions to stdout" in err and "infer" in err   # messages and the bar: stderr
    monkeypatch.setattr("sys.stdin", io.StringIO('{"inputs": "a"}\nnot json\n'))
    code, out, err = run_cli(capsys, "infer", "--checkpoint", ckpt, "--input", "-", "--output", "-")
    assert code == 2 and out == "" and "<stdin>:2: invalid JSON" in err


@pytest.mark.parametrize("extra, message", [
    (("--num-return-sequences", "2"), "--num-return-sequences 2"),                       # greedy has one answer
    (("--decode", "beam", "--beam-size", "2", "--num-return-sequences", "3"), "N <= --beam-size"),
    (("--num-return-sequences", "0"), "--num-return-sequences 0"),
])
def test_bad_num_return_sequences_is_one_line(setup, capsys, tmp_path, extra, message):
    code, _, err = run_cli(capsys, "infer", "--checkpoint", setup.ckpt, "--input", setup.src, "--output",
                           str(tmp_path / "o.jsonl"), *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_no_progress_turns_the_bar_off(setup, capsys, tmp_path):
    base = ("infer", "--checkpoint", setup.ckpt, "--input", setup.src, "--output", str(tmp_path / "p.jsonl"),
            "--max-decode-length", "6")
    assert "batch" in run_cli(capsys, *base)[2]                       # tqdm: "infer: 100%|...| 1/1 [..batch/s]"
    code, _, err = run_cli(capsys, *base, "--no-progress")
    assert code == 0 and "batch" not in err and "%|" not in err


def test_no_progress_reaches_train_and_build_local(monkeypatch, tmp_path):
    """train hands it to the loop (show_progress=False); data build-local turns TFDS's bars off and
    passes the rest of the command line on (both without training or building anything)."""
    seen = {}
    import t5x_lite.train.loop as loop
    monkeypatch.setattr(loop, "train", lambda config, workdir, **kw: seen.update(train=kw) or 0)
    assert cli.main(["train", "--workdir", str(tmp_path / "w"), "--no-progress"]) == 0
    assert seen["train"] == {"show_progress": False}
    assert cli.main(["train", "--workdir", str(tmp_path / "w")]) == 0 and seen["train"] == {"show_progress": True}

    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.utils import tqdm_utils
    from t5x_lite.builders import local
    monkeypatch.setattr(local, "main", lambda argv: seen.update(build=argv) or 0)
    try:
        assert cli.main(["data", "build-local", "--only", "local_wordnet", "--no-progress"]) == 0
        assert seen["build"] == ["--only", "local_wordnet"] and tqdm_utils._active is False
    finally:
        tfds.enable_progress_bar()


def test_hf_export_generate_equals_infer(setup, capsys, tmp_path, monkeypatch):
    """The checkpoint exported with `convert t5x-to-hf`, in T5ForConditionalGeneration + AutoTokenizer:
    greedy `generate` gives the ids and the text of `t5x-lite infer` (stdin in, stdout out)."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    hf_dir = str(tmp_path / "hf")
    assert run_cli(capsys, "convert", "t5x-to-hf", "--input", setup.ckpt, "--output", hf_dir)[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(open(setup.src).read()))
    code, out, err = run_cli(capsys, "infer", "--checkpoint", setup.ckpt, "--input", "-", "--output", "-",
                             "--max-decode-length", "6", "--no-progress")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    model = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).eval()
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    assert [ids[:n] for ids, n in zip(enc["input_ids"].tolist(), enc["attention_mask"].sum(1).tolist())] \
        == setup.prompts                                                      # the same prompt ids, EOS included
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=6, num_beams=1, do_sample=False)[:, 1:].tolist()
    for row, ids in zip(rows, gen):
        ids = ids[: ids.index(1) + 1] if 1 in ids else ids
        assert row["prediction_ids"] == ids
        assert row["prediction"] == tok.decode([i for i in ids if 1 < i < len(tok)])   # the model has 8192 rows
