#!/usr/bin/env bash
# One short go on one H100/H200 (about 5-6 minutes, compiles included; hard cap --budget, default 540 s):
#
#   bash tools/bench_gpu.sh [OUT_DIR] [--budget SECONDS] [--cpu-smoke]
#
#   1. the device: nvidia-smi name/memory/driver, jax version and devices;
#   2. T5.1.1-base, bfloat16, inputs 512 / targets 114 (T5X runs/pretrain.gin), batch $B per device,
#      through tools/bench_train.py with model.attention_impl=einsum (unfused) and =cudnn (fused);
#   3. the decoder-only LM at base size (configs/decoder_only_lm.py: T5.1.1-base's 768-wide layers as a
#      12-layer causal decoder, 512-token sequences), bfloat16, the same two attention paths;
#   4. T5.1.1-base peak device memory (and step time) per model.remat_policy (none, full,
#      dots_saveable: t5x_lite/models/config.py REMAT_POLICIES) through tools/gpu_memory.py, with the
#      default attention (auto: cudnn on GPU in bf16), because bench_train.py records no memory;
#   5. a summary table (OUT/summary.txt): tokens/s, step time, peak memory, MFU against the device's
#      datasheet peak (t5x_lite/train/metrics.py PEAK_FLOPS) and the goals: T5.1.1-base MFU >= 50%,
#      decoder LM MFU >= 55%.
#
# Every command runs under `timeout` with what is left of the budget (rows that no longer fit are
# skipped and say so), logs to OUT/<row>.log and writes OUT/<row>.json.  JAX's persistent compilation
# cache (OUT/jax_cache) lets a row reuse an identical program compiled by an earlier one.
# Exit: 0 every row ran; 1 a row failed, timed out or was skipped; 2 bad arguments or no GPU visible
# to JAX.  --cpu-smoke runs every row at tiny sizes on CPU (cudnn -> xla, which CPU has) to test this
# script; its figures mean nothing.  $PYTHON picks the interpreter (default python).
set -euo pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "bench_gpu.sh: error: $*" >&2; exit 2; }

OUT=""
SMOKE=0
BUDGET=""
while (($#)); do
  case "$1" in
    --cpu-smoke) SMOKE=1 ;;
    --budget) (($# >= 2)) || die "--budget needs a number of seconds"; BUDGET=$2; shift ;;
    --budget=*) BUDGET=${1#--budget=} ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (usage: bash tools/bench_gpu.sh [OUT_DIR] [--budget SECONDS] [--cpu-smoke])" ;;
    *) [[ -z "$OUT" ]] || die "one OUT_DIR only, got '$OUT' and '$1'"; OUT=$1 ;;
  esac
  shift
done
OUT=${OUT:-./bench_gpu_out}
if [[ -z "$BUDGET" ]]; then BUDGET=$((SMOKE ? 1200 : 540)); fi
[[ "$BUDGET" =~ ^[0-9]+$ ]] && ((BUDGET >= 60)) || die "--budget must be a whole number of seconds >= 60, got '$BUDGET'"
PY=${PYTHON:-python}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
START=$SECONDS

# --- 0. a GPU, or --cpu-smoke -------------------------------------------------------------------
PROBE='import jax; d = jax.devices(); print(d[0].platform, jax.device_count(), d[0].device_kind, sep="|")'
probe=$("$PY" -c "$PROBE" 2>/dev/null | tail -n 1) || die "'$PY -c \"import jax\"' failed; install the project (pip install -e .) or set PYTHON"
IFS='|' read -r platform ndev kind <<< "$probe"
if ((!SMOKE)) && [[ "$platform" != "gpu" ]]; then
  die "no GPU visible to JAX (it sees ${ndev:-?} ${platform:-?} device(s), ${kind:-?}); run this on an H100/H200 with a CUDA jaxlib, or pass --cpu-smoke to test the script on CPU"
fi
mkdir -p "$OUT" || die "cannot create OUT_DIR $OUT"
OUT=$(cd "$OUT" && pwd)
: > "$OUT/status.tsv"

export JAX_COMPILATION_CACHE_DIR="$OUT/jax_cache"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

# --- 1. the device ------------------------------------------------------------------------------
echo "== device"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version --format=csv,noheader 2>&1 | sed 's/^/  nvidia-smi: /' || true
else
  echo "  nvidia-smi: not found"
fi
"$PY" -c 'import jax, jaxlib; print(f"  jax {jax.__version__} (jaxlib {jaxlib.__version__}), backend {jax.default_backend()}: {jax.devices()}")'
echo "  python $("$PY" -c 'import sys; print(sys.version.split()[0])'), repo $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'); budget ${BUDGET} s; out $OUT"

# --- sizes --------------------------------------------------------------------------------------
# T5X's t5_1_1 pretraining (runs/pretrain.gin, configs/t5_1_1.py): 128 sequences of 512 inputs /
# 114 targets per step over a whole TPU slice.  One H100 80GB gets B=64 sequences per step: 40k
# tokens per step already fills its matmuls, and it leaves room for the unfused (einsum) path's
# float32 [B, 12, 512, 512] attention scores and for remat_policy=none (an estimated 25-35 GB);
# B=128 would risk running out of memory on exactly the rows that compare against it.  The decoder
# LM uses the same B (64 x 512 = 33k tokens per step).
B=${B:-64}
B_LM=${B_LM:-64}
IN=512; TG=114; LM_LEN=512
STEPS=5; WARMUP=2; REPS=3
FUSED=cudnn
TINY=()
CAP_T5=150; CAP_LM=120; CAP_MEM=150
if ((SMOKE)); then
  echo "== --cpu-smoke: every row at tiny sizes on CPU; cudnn -> xla (cuDNN needs a GPU); the figures mean nothing"
  B=2; B_LM=2; IN=32; TG=8; LM_LEN=40
  STEPS=1; WARMUP=1; REPS=1
  FUSED=xla
  TINY=(--set model.d_model=64 --set model.num_heads=2 --set model.d_kv=32 --set model.d_ff=128
        --set model.num_encoder_layers=1 --set model.num_decoder_layers=1 --set model.vocab_size=8192)
  CAP_T5=240; CAP_LM=240; CAP_MEM=240
fi
ATTN=(einsum "$FUSED")
if ! "$PY" -c 'from t5x_lite.train.default_config import get_config as g; assert "attention_impl" in g().model' 2>/dev/null; then
  echo "WARNING: this checkout's config has no model.attention_impl; the attention rows run the default attention once"
  ATTN=(default)
fi

# --- the runner -----------------------------------------------------------------------------------
RESERVE=20   # seconds kept for the summary
MIN_RUN=30   # a row with less than this left is skipped
FAILED=0
run() {   # run NAME CAP_SECONDS COMMAND...
  local name=$1 cap=$2 left t rc=0 t0 status
  shift 2
  left=$((BUDGET - (SECONDS - START) - RESERVE))
  if ((left < MIN_RUN)); then
    echo "[$name] SKIPPED: the ${BUDGET} s budget is spent"
    printf '%s\tskipped\t0\n' "$name" >> "$OUT/status.tsv"
    FAILED=$((FAILED + 1))
    return 0
  fi
  t=$((cap < left ? cap : left))
  echo "[$name] timeout ${t}s: $*"
  t0=$SECONDS
  timeout --kill-after=10 "$t" "$@" > "$OUT/$name.log" 2>&1 || rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="timeout(${t}s)" ;;
    3) status=oom ;;
    *) status="failed(rc=$rc)" ;;
  esac
  [[ $rc == 0 ]] || FAILED=$((FAILED + 1))
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >> "$OUT/status.tsv"
  echo "[$name] $status in $((SECONDS - t0)) s"
  grep -E "median|peak|step |MFU|error|Error|WARNING" "$OUT/$name.log" | tail -n 4 | sed 's/^/    /' || true
  return 0
}

attn_set() { [[ $1 == default ]] || printf '%s\n' --set "model.attention_impl=$1"; }

# --- 2.-3. step time per attention path ------------------------------------------------------------
for impl in "${ATTN[@]}"; do
  mapfile -t A < <(attn_set "$impl")
  run "t5_base_$impl" "$CAP_T5" "$PY" tools/bench_train.py --config configs/t5_1_1.py:base --batch "$B" \
    --inputs "$IN" --targets "$TG" --dtype bfloat16 --steps "$STEPS" --warmup "$WARMUP" --reps "$REPS" \
    "${A[@]}" "${TINY[@]}" --json "$OUT/t5_base_$impl.json"
done
for impl in "${ATTN[@]}"; do
  mapfile -t A < <(attn_set "$impl")
  run "lm_base_$impl" "$CAP_LM" "$PY" tools/bench_train.py --config configs/decoder_only_lm.py --batch "$B_LM" \
    --inputs 0 --targets "$LM_LEN" --dtype bfloat16 --steps "$STEPS" --warmup "$WARMUP" --reps "$REPS" \
    "${A[@]}" "${TINY[@]}" --json "$OUT/lm_base_$impl.json"
done

# --- 4. memory per remat policy -------------------------------------------------------------------
for policy in none full dots_saveable; do
  run "mem_t5_base_remat_$policy" "$CAP_MEM" "$PY" tools/gpu_memory.py --config configs/t5_1_1.py:base \
    --batch "$B" --inputs "$IN" --targets "$TG" --dtype bfloat16 --steps "$STEPS" --warmup 1 --reps "$REPS" \
    --set "model.remat_policy=$policy" "${TINY[@]}" --label "remat_$policy" --json "$OUT/mem_t5_base_remat_$policy.json"
done

# --- 5. summary -------------------------------------------------------------------------------------
echo "== summary ($OUT/summary.txt)"
"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, os, sys
out = sys.argv[1]
GOALS = {"t5": ("T5.1.1-base", 0.50), "lm": ("decoder LM", 0.55), "mem": ("T5.1.1-base", 0.50)}
rows = []
with open(os.path.join(out, "status.tsv")) as f:
    for line in f:
        name, status, secs = line.rstrip("\n").split("\t")
        path = os.path.join(out, name + ".json")
        r = {}
        if status == "ok" and os.path.exists(path):
            with open(path) as g:
                r = json.load(g)
        rows.append((name, status, secs, r))
def gib(n):
    return "-" if n is None else f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
print(f"{'row':<32} {'status':<14} {'tokens/s':>10} {'step ms':>9} {'peak mem':>10} {'MFU':>7}  goal")
device = next((r.get("device") for _, _, _, r in rows if r.get("device")), "?")
for name, status, secs, r in rows:
    if r.get("tool") == "bench_train":
        fig = r["figures"]["t5x_lite"]
        step, tps, mfu, mem = fig["step_time_s"], fig["tokens_per_s"], fig.get("datasheet_mfu"), None
        mem_s = "n/a*"
    elif r.get("tool") == "gpu_memory":
        step, tps, mfu, mem = r["step_time_s"], r["tokens_per_s"], r.get("datasheet_mfu"), r.get("peak_bytes_in_use")
        mem_s = gib(mem) if mem is not None else (f"~{gib(r['xla_temp_bytes'] + r['xla_argument_bytes'])}x"
                                                 if "xla_temp_bytes" in r else "-")
    else:
        print(f"{name:<32} {status:<14} {'-':>10} {'-':>9} {'-':>10} {'-':>7}  -")
        continue
    what, goal = GOALS[name.split("_")[0]]
    verdict = "n/a (no datasheet peak)" if mfu is None else (
        f"{'MET' if mfu >= goal else 'NOT MET'} ({what} >= {goal:.0%})")
    mfu_s = "-" if mfu is None else f"{100 * mfu:.1f}%"
    print(f"{name:<32} {status:<14} {tps:>10.0f} {1e3 * step:>9.1f} {mem_s:>10} {mfu_s:>7}  {verdict}")
print(f"device: {device}")
print("MFU = model FLOPs per step (t5x_lite/models/flops.py) / step time / the datasheet bf16 dense peak "
      "(t5x_lite/train/metrics.py PEAK_FLOPS; none on CPU).")
print("n/a* = tools/bench_train.py records no memory: see the mem_* rows (tools/gpu_memory.py: the "
      "allocator's peak over the whole process; x = XLA's compile-time estimate where no allocator stats exist).")
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump([{"row": n, "status": s, "seconds": int(t), **r} for n, s, t, r in rows], f, indent=1, default=str)
EOF

echo "== done in $((SECONDS - START)) s; logs and JSON in $OUT"
if ((FAILED)); then
  echo "bench_gpu.sh: $FAILED row(s) failed, timed out or were skipped (see $OUT/status.tsv and $OUT/<row>.log)" >&2
  exit 1
fi
