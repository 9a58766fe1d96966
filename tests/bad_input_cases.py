"""The bad-input table of tests/test_bad_inputs.py (not a test module itself).

Each `Case` is one bad input: `argv` for `t5x_lite.cli.main`, the exit code (2 unless said),
`expect`, the words of the one error line that say what is wrong, and optionally `setup(world,
tmp)` (creates files under the case's own tmp), `env` (environment variables) and
`inject(world, tmp, monkeypatch)` (a fault that cannot be made for real here).  Paths in argv,
expect and env are str.format fields: {wd} (a trained workdir), {lm} (a decoder-only checkpoint,
byte vocabulary, learned positions, max_position_embeddings=16), {conv} (a converted checkpoint),
{hf} (an HF save_pretrained dir), {good_in} (a valid score/infer input), {prior_out} and
{prior_vocab} (prior outputs that must survive), {file} (a plain file), {corpus} (a text file),
{empty_data} (an empty data dir), {tmp} (the case's own directory).  To add cases, append them.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from typing import Callable

from train_helpers import TINY_MODEL

TASK = "bad_inputs_copy"   # registered by the world fixture (an in-memory translation task)

@dataclasses.dataclass
class Case:
    id: str
    argv: list[str]
    expect: str                               # substring of the one error line
    code: int = 2
    setup: Callable | None = None             # setup(world, tmp)
    env: dict | None = None                   # environment variables ({...} fields allowed)
    inject: Callable | None = None            # inject(world, tmp, monkeypatch)


# ------------------------------------------------------------------------------------------ setups
def _damaged(how):
    """A copy of the trained workdir at {tmp}/d whose latest step is damaged as a disk would:
    4 KiB zeroed inside the biggest params file (size unchanged), that file truncated to half,
    or an edited config (it still parses)."""
    def setup(world, tmp):
        import shutil
        shutil.copytree(world["wd"], os.path.join(tmp, "d"))
        ck = os.path.join(tmp, "d", "checkpoints")
        step = os.path.join(ck, max((e for e in os.listdir(ck) if e.isdigit()), key=int))
        if how == "config":
            meta = os.path.join(step, "config", "metadata")
            text = open(meta).read()
            assert '"seed": 0' in text
            open(meta, "w").write(text.replace('"seed": 0', '"seed": 1'))
            return
        files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step, "params")) for f in fs]
        big = max(files, key=os.path.getsize)
        size = os.path.getsize(big)
        with open(big, "r+b") as f:
            if how == "zero_4k":
                f.seek(size // 2)
                f.write(b"\0" * 4096)
            else:
                f.truncate(size // 2)
    return setup


def _write(rel, text):
    def setup(world, tmp):
        path = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return setup


def _write_bytes(rel, data):
    def setup(world, tmp):
        with open(os.path.join(tmp, rel), "wb") as f:
            f.write(data)
    return setup


def _mkdir(rel):
    return lambda world, tmp: os.makedirs(os.path.join(tmp, rel))


def _read_only(rel):
    """A directory `rel` that cannot be written.  As root chmod does not stop writes, so the
    refusal is injected: os.makedirs/os.access answer EACCES for paths under it, as they would."""
    def inject(world, tmp, monkeypatch):
        ro = os.path.join(tmp, rel)
        os.makedirs(ro)
        os.chmod(ro, 0o555)
        if not os.access(ro, os.W_OK):
            return                               # not root: the real thing
        real_makedirs, real_access = os.makedirs, os.access

        def makedirs(path, *a, **k):
            if os.path.abspath(path).startswith(ro + os.sep) and not os.path.isdir(path):
                raise PermissionError(errno.EACCES, "Permission denied", path)
            return real_makedirs(path, *a, **k)

        def access(path, mode, *a, **k):
            if os.path.abspath(path) == ro or os.path.abspath(path).startswith(ro + os.sep):
                return mode == os.F_OK or not mode & os.W_OK
            return real_access(path, mode, *a, **k)
        monkeypatch.setattr(os, "makedirs", makedirs)
        monkeypatch.setattr(os, "access", access)
    return inject


def _disk_full(world, tmp, monkeypatch):
    """The checkpoint write fails part-way (injected: no small filesystem to fill here)."""
    from t5x_lite import checkpoints

    def save(directory, *a, **k):
        os.makedirs(os.path.join(directory, "0"))
        with open(os.path.join(directory, "0", "params.partial"), "w") as f:   # left over unless cleaned up
            f.write("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoints, "save_params_checkpoint", save)


SCORE_IN = '{"inputs": "hello", "targets": "world"}\n'
LONG = json.dumps({"inputs": list(range(3, 23)), "targets": [5, 6]}) + "\n"    # 22 tokens > 16 positions
CKPT = ["--checkpoint", "{wd}"]

# ------------------------------------------------------------------------------------------- table
CASES = [
    # --- the dispatcher
    Case("top-unknown", ["trian"], "unknown command 'trian' (did you mean: train"),
    Case("top-flag", ["--bogus"], "unknown command '--bogus'"),
    Case("top-case", ["Score"], "did you mean: score"),
    # --- train
    Case("train-no-workdir", ["train"], "--workdir is required"),
    Case("train-workdir-is-file", ["train", "--workdir", "{file}"], "exists and is not a directory"),
    Case("train-workdir-parent-file", ["train", "--workdir", "{file}/wd"], "is a file, not a directory"),
    Case("train-workdir-read-only", ["train", "--workdir", "{tmp}/ro/wd"], "Permission denied",
         inject=_read_only("ro")),
    Case("train-checkpoints-is-file", ["train", "--workdir", "{tmp}/wd", *TINY_MODEL],
         "checkpoint directory", setup=_write("wd/checkpoints", "x")),
    Case("train-unknown-flag", ["train", "--workdir", "{tmp}/wd", "--bogus"], "Unknown command line flag 'bogus'"),
    Case("train-unknown-key", ["train", "--workdir", "{tmp}/wd", "--config.model.d_modle=3"],
         "unknown config key 'model.d_modle' (did you mean model.d_model"),
    Case("train-bad-int", ["train", "--workdir", "{tmp}/wd", "--config.train.num_steps=abc"], "num_steps"),
    Case("train-config-missing", ["train", "--workdir", "{tmp}/wd", "--config", "{tmp}/nope.py"],
         "--config {tmp}/nope.py: no such file"),
    Case("train-config-dir", ["train", "--workdir", "{tmp}/wd", "--config={tmp}"], "--config {tmp}: is a directory"),
    Case("train-gin-missing", ["train", "--workdir", "{tmp}/wd", "--gin_file", "{tmp}/nope.gin"], "nope.gin"),
    Case("train-bad-architecture", ["train", "--workdir", "{tmp}/wd", "--config.model.architecture=rnn"],
         "model.architecture must be one of"),
    Case("train-unknown-task", ["train", "--workdir", "{tmp}/wd", "--config.data.task=no_such_task"],
         "no_such_task"),
    Case("train-module", ["train", "--workdir", "{tmp}/wd", "--module", "no_such_module_xyz"],
         "--module no_such_module_xyz: cannot import it"),
    Case("train-positional", ["train", "--workdir", "{tmp}/wd", "extra"], "unexpected positional arguments: extra"),
    Case("train-init-missing", ["train", "--workdir", "{tmp}/wd", *TINY_MODEL,
                                "--config.init_checkpoint={tmp}/no_ckpt"], "no_ckpt"),
    Case("train-changed-model", ["train", "--workdir", "{wd}", *TINY_MODEL, "--config.model.d_ff=32",
                                 "--config.train.num_steps=4"], "different model"),
    Case("train-local-task-not-built", ["train", "--workdir", "{tmp}/wd", *TINY_MODEL,
                                        "--config.data.task=local_wordnet_lexname"],
         "t5x-lite data build-local --only local_wordnet_lexname", env={"T5X_LITE_DATA_DIR": "{empty_data}"}),
    # --- data
    Case("data-bogus", ["data", "bogus"], "invalid choice: 'bogus'"),
    Case("data-inspect-no-task", ["data", "inspect"], "inspect: the following arguments are required: --task"),
    Case("data-inspect-unknown-task", ["data", "inspect", "--task", "no_such_task"], "no_such_task"),
    Case("data-inspect-num-0", ["data", "inspect", "--task", "builtin_span_corruption", "--num", "0"],
         "--num must be positive"),
    Case("data-inspect-num-x", ["data", "inspect", "--task", "x", "--num", "x"], "invalid int value: 'x'"),
    Case("data-inspect-split", ["data", "inspect", "--task", TASK, "--split", "nope"], "nope"),
    Case("data-local-not-built-env", ["data", "inspect", "--task", "local_wordnet_lexname"],
         "t5x-lite data build-local --only local_wordnet_lexname`", env={"T5X_LITE_DATA_DIR": "{empty_data}"}),
    Case("data-local-not-built-dir", ["data", "inspect", "--task", "local_qa_wordnet", "--data-dir", "{tmp}/e"],
         "t5x-lite data build-local --only local_qa_wordnet --out {tmp}/e`", setup=_mkdir("e")),
    Case("data-list-module", ["data", "list", "--module", "no_such_module_xyz"], "cannot import it"),
    Case("build-local-unknown", ["data", "build-local", "--only", "local_wordnet_lexnme"],
         "unknown dataset(s) 'local_wordnet_lexnme' (did you mean 'local_wordnet_lexname'?)"),
    Case("build-local-out-file", ["data", "build-local", "--out", "{file}", "--only", "local_wordnet_lexname"],
         "--out"),
    Case("build-local-out-parent-file", ["data", "build-local", "--out", "{file}/d", "--only", "local_qa_wordnet"],
         "is a file, not a directory"),
    Case("build-local-max-examples", ["data", "build-local", "--max-examples", "0"], "--max-examples must be"),
    Case("build-local-flag", ["data", "build-local", "--bogus"], "build-local: unrecognized arguments: --bogus"),
    # --- vocab
    Case("vocab-bogus", ["vocab", "bogus"], "invalid choice: 'bogus'"),
    Case("vocab-train-missing", ["vocab", "train"], "train: the following arguments are required"),
    Case("vocab-no-match", ["vocab", "train", "--input", "{tmp}/*.nothing", "--vocab-size", "300", "--out",
                            "{tmp}/v"], "no file matches --input"),
    Case("vocab-input-dir", ["vocab", "train", "--input", "{tmp}", "--vocab-size", "300", "--out", "{tmp}/v"],
         "matches the directory {tmp}; give text files"),
    Case("vocab-input-not-utf8", ["vocab", "train", "--input", "{tmp}/c.txt", "--vocab-size", "300", "--out",
                                  "{tmp}/v"], "c.txt: not UTF-8 text", setup=_write_bytes("c.txt", b"ok\n\xc3\x28\n")),
    Case("vocab-size-3", ["vocab", "train", "--input", "{corpus}", "--vocab-size", "3", "--out", "{tmp}/v"],
         "--vocab-size must be at least 4"),
    Case("vocab-byte-fallback", ["vocab", "train", "--input", "{corpus}", "--vocab-size", "100", "--out",
                                 "{tmp}/v"], "too small for --byte-fallback"),
    Case("vocab-model-type", ["vocab", "train", "--input", "{corpus}", "--vocab-size", "300", "--model-type",
                              "word", "--out", "{tmp}/v"], "invalid choice: 'word'"),
    Case("vocab-out-parent-file", ["vocab", "train", "--input", "{corpus}", "--vocab-size", "300", "--out",
                                   "{file}/v"], "is a file, not a directory"),
    Case("vocab-out-model-is-dir", ["vocab", "train", "--input", "{corpus}", "--vocab-size", "300", "--out",
                                    "{tmp}/v"], "v.model is a directory", setup=_mkdir("v.model")),
    Case("vocab-out-read-only", ["vocab", "train", "--input", "{corpus}", "--vocab-size", "300", "--out",
                                 "{tmp}/ro/sub/v"], "Permission denied", inject=_read_only("ro")),
    Case("vocab-too-big-keeps-prior", ["vocab", "train", "--input", "{corpus}", "--vocab-size", "100000",
                                       "--no-byte-fallback", "--out", "{prior_vocab}"],
         "SentencePiece training failed: Vocabulary size too high (100000)."),
    # --- convert
    Case("convert-none", ["convert"], "the following arguments are required"),
    Case("convert-bogus", ["convert", "bogus"], "invalid choice: 'bogus'"),
    Case("convert-missing-output", ["convert", "hf-to-t5x", "--input", "{hf}"],
         "hf-to-t5x: the following arguments are required: --output"),
    Case("convert-input-missing", ["convert", "hf-to-t5x", "--input", "{tmp}/nope", "--output", "{tmp}/c"],
         "directory not found"),
    Case("convert-no-config", ["convert", "hf-to-t5x", "--input", "{tmp}/h", "--output", "{tmp}/c"],
         "has no config.json", setup=_mkdir("h")),
    Case("convert-bad-config", ["convert", "hf-to-t5x", "--input", "{tmp}/h", "--output", "{tmp}/c"],
         "cannot parse", setup=_write("h/config.json", "{not json")),
    Case("convert-output-file", ["convert", "hf-to-t5x", "--input", "{hf}", "--output", "{file}"],
         "exists and is not a directory"),
    Case("convert-output-parent-file", ["convert", "hf-to-t5x", "--input", "{hf}", "--output", "{file}/c"],
         "is a file, not a directory"),
    Case("convert-output-not-empty", ["convert", "hf-to-t5x", "--input", "{hf}", "--output", "{wd}/checkpoints"],
         "is not empty (pass --overwrite"),
    Case("convert-overwrite-workdir", ["convert", "hf-to-t5x", "--input", "{hf}", "--output", "{wd}", "--overwrite"],
         "does not look like a checkpoint directory"),
    Case("convert-overwrite-disk-full", ["convert", "hf-to-t5x", "--input", "{hf}", "--output", "{conv}",
                                         "--overwrite"], "cannot write checkpoint {conv}: No space left on device",
         inject=_disk_full),
    Case("convert-to-hf-missing", ["convert", "t5x-to-hf", "--input", "{tmp}/nope", "--output", "{tmp}/h"],
         "not found"),
    Case("convert-to-hf-decoder-only", ["convert", "t5x-to-hf", "--input", "{lm}", "--output", "{tmp}/h"],
         "encoder_decoder"),
    Case("convert-to-hf-output-file", ["convert", "t5x-to-hf", "--input", "{wd}", "--output", "{file}"],
         "exists and is not a directory"),
    # --- score
    Case("score-none", ["score"], "the following arguments are required: --checkpoint"),
    Case("score-batch-x", ["score", *CKPT, "--input", "{good_in}", "--output", "{tmp}/o", "--batch-size", "x"],
         "argument --batch-size: invalid int value: 'x'"),
    Case("score-checkpoint-missing", ["score", "--checkpoint", "{tmp}/nope", "--input", "{good_in}", "--output",
                                      "{tmp}/o"], "not found"),
    Case("score-output-is-dir", ["score", *CKPT, "--input", "{good_in}", "--output", "{tmp}"], "is a directory"),
    Case("score-output-parent-file", ["score", *CKPT, "--input", "{good_in}", "--output", "{file}/o.jsonl"],
         "is a file, not a directory"),
    Case("score-input-missing", ["score", *CKPT, "--input", "{tmp}/nope.jsonl", "--output", "{prior_out}"],
         "nope.jsonl"),
    Case("score-bad-json", ["score", *CKPT, "--input", "{tmp}/i", "--output", "{prior_out}"], "i:2: invalid JSON",
         setup=_write("i", SCORE_IN + "{oops\n")),
    Case("score-no-targets", ["score", *CKPT, "--input", "{tmp}/i", "--output", "{prior_out}"],
         "missing 'targets'", setup=_write("i", '{"inputs": "a"}\n')),
    Case("score-id-range", ["score", *CKPT, "--input", "{tmp}/i", "--output", "{prior_out}"],
         "token id 999999 outside", setup=_write("i", '{"inputs": "a", "targets": [999999]}\n')),
    Case("score-corrupt-gz", ["score", *CKPT, "--input", "{tmp}/i.jsonl.gz", "--output", "{prior_out}"],
         "cannot read {tmp}/i.jsonl.gz: BadGzipFile", setup=_write_bytes("i.jsonl.gz", b"not gzip at all\n")),
    Case("score-empty", ["score", *CKPT, "--input", "{tmp}/i", "--output", "{prior_out}"], "has no examples",
         setup=_write("i", "")),
    Case("score-batch-0", ["score", *CKPT, "--input", "{good_in}", "--output", "{prior_out}", "--batch-size", "0"],
         "--batch-size must be >= 1"),
    Case("score-step", ["score", *CKPT, "--step", "999", "--input", "{good_in}", "--output", "{prior_out}"], "999"),
    Case("score-too-long", ["score", "--checkpoint", "{lm}", "--input", "{tmp}/i", "--output", "{prior_out}"],
         "inputs + targets of 22 tokens exceed the model's max_position_embeddings 16", setup=_write("i", LONG)),
    # --- eval
    Case("eval-none", ["eval"], "the following arguments are required: --checkpoint"),
    Case("eval-unknown-task", ["eval", *CKPT, "--task", "no_such_task", "--output", "{tmp}/e"], "no_such_task"),
    Case("eval-output-file", ["eval", *CKPT, "--task", TASK, "--output", "{file}"], "exists and is not a directory"),
    Case("eval-output-parent-file", ["eval", *CKPT, "--task", TASK, "--output", "{file}/e"],
         "is a file, not a directory"),
    Case("eval-output-read-only", ["eval", *CKPT, "--task", TASK, "--output", "{tmp}/ro/e"], "Permission denied",
         inject=_read_only("ro")),
    Case("eval-max-examples", ["eval", *CKPT, "--task", TASK, "--output", "{tmp}/e", "--max-examples", "0"],
         "--max-examples must be >= 1"),
    Case("eval-num-shots-neg", ["eval", *CKPT, "--task", TASK, "--output", "{tmp}/e", "--num-shots", "-1"],
         "--num-shots must be >= 0"),
    Case("eval-num-shots-encdec", ["eval", *CKPT, "--task", TASK, "--output", "{tmp}/e", "--num-shots", "1"],
         "--num-shots needs a decoder_only checkpoint"),
    Case("eval-split", ["eval", *CKPT, "--task", TASK, "--output", "{tmp}/e", "--split", "test"], "no split 'test'"),
    Case("eval-inputs-length", ["eval", *CKPT, "--task", TASK, "--output", "{tmp}/e", "--inputs-length", "1"],
         "--inputs-length must be >= 2"),
    Case("eval-beam-0", ["eval", *CKPT, "--task", TASK, "--output", "{tmp}/e", "--beam-size", "0"], "beam size"),
    Case("eval-decode", ["eval", *CKPT, "--task", TASK, "--output", "{tmp}/e", "--decode", "sample"],
         "invalid choice: 'sample'"),
    Case("eval-local-not-built", ["eval", *CKPT, "--task", "local_debian_section", "--output", "{tmp}/e"],
         "t5x-lite data build-local --only local_debian_section", env={"T5X_LITE_DATA_DIR": "{empty_data}"}),
    # --- infer
    Case("infer-none", ["infer"], "the following arguments are required: --checkpoint"),
    Case("infer-input-missing", ["infer", *CKPT, "--input", "{tmp}/nope.jsonl", "--output", "{prior_out}"],
         "nope.jsonl"),
    Case("infer-no-inputs", ["infer", *CKPT, "--input", "{tmp}/i", "--output", "{prior_out}"],
         'must be an object with an "inputs" field', setup=_write("i", '{"text": "a"}\n')),
    Case("infer-not-utf8", ["infer", *CKPT, "--input", "{tmp}/i", "--output", "{prior_out}"], "i: not UTF-8 text",
         setup=_write_bytes("i", b'\xff\xfe{"inputs": "a"}\n')),
    Case("infer-empty", ["infer", *CKPT, "--input", "{tmp}/i", "--output", "{prior_out}"], "has no input lines",
         setup=_write("i", "\n")),
    Case("infer-id-range", ["infer", *CKPT, "--input", "{tmp}/i", "--output", "{prior_out}"],
         "line 1: token id -5 out of range", setup=_write("i", '{"inputs": [-5]}\n')),
    Case("infer-output-is-dir", ["infer", *CKPT, "--input", "{good_in}", "--output", "{tmp}"], "is a directory"),
    Case("infer-output-parent-file", ["infer", *CKPT, "--input", "{good_in}", "--output", "{file}/o"],
         "is a file, not a directory"),
    Case("infer-output-read-only", ["infer", *CKPT, "--input", "{good_in}", "--output", "{tmp}/ro/x/o.jsonl"],
         "Permission denied", inject=_read_only("ro")),
    Case("infer-temperature", ["infer", *CKPT, "--input", "{good_in}", "--output", "{prior_out}", "--temperature",
                               "-1"], "need --temperature >= 0"),
    Case("infer-max-decode-0", ["infer", *CKPT, "--input", "{good_in}", "--output", "{prior_out}",
                                "--max-decode-length", "0"], "--max-decode-length must be >= 1, got 0"),
    Case("infer-prompt-too-long", ["infer", "--checkpoint", "{lm}", "--input", "{tmp}/i", "--output", "{prior_out}"],
         "line 1: a prompt of 20 tokens does not fit model.max_position_embeddings=16",
         setup=_write("i", json.dumps({"inputs": list(range(3, 23))}) + "\n")),
    Case("infer-vocabulary", ["infer", *CKPT, "--input", "{good_in}", "--output", "{prior_out}", "--vocabulary",
                              "spm:{tmp}/no.model"], "no.model"),
    # --- study
    Case("study-none", ["study"], "the following arguments are required"),
    Case("study-bogus", ["study", "bogus"], "invalid choice: 'bogus'"),
    Case("study-list-unknown", ["study", "list", "t5_table99"], "invalid choice: 't5_table99'"),
    Case("study-run-no-scale", ["study", "run", "t5_table2", "--workdir", "{tmp}/s"],
         "run: the following arguments are required: --scale"),
    Case("study-run-scale", ["study", "run", "t5_table2", "--scale", "huge", "--workdir", "{tmp}/s"],
         "invalid choice: 'huge'"),
    Case("study-run-cells", ["study", "run", "t5_table2", "--scale", "cpu", "--workdir", "{tmp}/s", "--cells",
                             "nope"], "has no cell 'nope'"),
    Case("study-run-workdir-file", ["study", "run", "t5_table2", "--scale", "cpu", "--workdir", "{file}"],
         "exists and is not a directory"),
    Case("study-run-workdir-parent-file", ["study", "run", "t5_table2", "--scale", "cpu", "--workdir", "{file}/s"],
         "is a file, not a directory"),
    Case("study-run-bad-claim", ["study", "run", "t5_table2", "--scale", "cpu", "--workdir", "{tmp}/s"],
         "study.json is not valid JSON", setup=_write("s/study.json", "{oops")),
    Case("study-report-missing", ["study", "report", "{tmp}/none"], "not found"),
    Case("study-report-bad-json", ["study", "report", "{tmp}/r"], "not valid JSON", setup=_write("r/results.json", "[")),
    Case("study-report-file", ["study", "report", "{file}"], "DIR must be a study directory"),
    Case("study-seeds", ["study", "list", "--seeds", "x"], "invalid int value: 'x'"),
    # --- plot
    Case("plot-none", ["plot"], "the following arguments are required: WORKDIR"),
    Case("plot-missing", ["plot", "{tmp}/none", "--output", "{tmp}/p.png"], "no such directory"),
    Case("plot-no-metrics", ["plot", "{tmp}/e", "--output", "{tmp}/p.png"], "no metrics.jsonl", setup=_mkdir("e")),
    Case("plot-empty", ["plot", "{tmp}/m", "--output", "{tmp}/p.png"], "metrics.jsonl is empty",
         setup=_write("m/metrics.jsonl", "")),
    Case("plot-output-dir", ["plot", "{wd}", "--output", "{tmp}"], "is a directory"),
    Case("plot-output-under-file", ["plot", "{wd}", "--output", "{file}/p.png"], "is a file, not a directory"),
    # --- damaged checkpoints (a copy of {wd} under {tmp}/d, its latest step damaged on disk)
    *[Case(f"{cmd}-damaged-{how}", argv, "is damaged: params/", setup=_damaged(how))
      for how in ("zero_4k", "truncated")
      for cmd, argv in (
          ("score", ["score", "--checkpoint", "{tmp}/d", "--input", "{good_in}", "--output", "{prior_out}"]),
          ("eval", ["eval", "--checkpoint", "{tmp}/d", "--task", TASK, "--output", "{tmp}/e"]),
          ("infer", ["infer", "--checkpoint", "{tmp}/d", "--input", "{good_in}", "--output", "{prior_out}"]),
          ("convert", ["convert", "t5x-to-hf", "--input", "{tmp}/d", "--output", "{tmp}/h"]),
          ("train-init", ["train", "--workdir", "{tmp}/ft", *TINY_MODEL, "--config.init_checkpoint={tmp}/d"]))],
    Case("score-damaged-config", ["score", "--checkpoint", "{tmp}/d", "--input", "{good_in}", "--output",
                                  "{prior_out}"], "is damaged: config/ does not match the checksum saved with it",
         setup=_damaged("config")),
]
