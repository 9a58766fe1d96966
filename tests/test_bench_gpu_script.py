"""tools/bench_gpu.sh: valid bash, and without a GPU (and without --cpu-smoke) it stops at once with
one clear line and a non-zero exit, before creating anything.  (Its rows are checked by running
`bash tools/bench_gpu.sh --cpu-smoke`, minutes on CPU, not here.)"""

import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tools", "bench_gpu.sh")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run(*args, **env):
    e = dict(os.environ)
    e.update(env)
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=e, cwd=REPO, timeout=120)


def lines(text):
    return [line for line in text.splitlines() if line.strip()]


def test_syntax():
    r = subprocess.run(["bash", "-n", SCRIPT], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_no_gpu_is_one_clear_line(tmp_path):
    out = tmp_path / "out"
    r = run(str(out), JAX_PLATFORMS="cpu")   # hides any GPU: JAX sees the CPU only
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(lines(r.stderr)) == 1, r.stderr
    assert "no GPU visible to JAX" in r.stderr and "--cpu-smoke" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("args,expect", [(["--bogus"], "unknown option --bogus"),
                                         (["--budget", "abc", "--cpu-smoke"], "--budget must be"),
                                         (["a", "b"], "one OUT_DIR only")])
def test_bad_arguments_are_one_line(args, expect):
    r = run(*args)
    assert r.returncode == 2
    err = lines(r.stderr)
    assert len(err) == 1 and expect in err[0], r.stderr
