#!/usr/bin/env bash
# End-to-end proof: pretrain -> fine-tune -> evaluate, on the local downstream stand-ins.
#
#   1. `t5x-lite train` with the embedded default config (tiny T5.1.1, span corruption on the
#      shipped corpus) for PRETRAIN_STEPS steps;
#   2. fine-tune that checkpoint (params only, --config.init_checkpoint) on
#        local_translate_en_de   (SacreBLEU intl/exp)
#        local_wordnet_lexname   (accuracy)
#        local_summarize_debian  (ROUGE-2-F)
#      with configs/finetune.py:TASK for FT_STEPS steps each;
#   3. `t5x-lite eval` (greedy) on the first MAX_EXAMPLES validation examples of each task;
#   4. print the metrics and a few predictions (summary also in $OUT/summary.json).
#
# Needs the local datasets: `t5x-lite data build-local` (root, Debian; see docs/downstream.md).
# Usage: tools/e2e_finetune.sh [OUT_DIR]          (default /tmp/t5x_lite_e2e)
# Knobs (env): PRETRAIN_STEPS=300 FT_STEPS=300 FT_LR=0.003 MAX_EXAMPLES=200 PRETRAIN_DIR=<reuse a run>
set -euo pipefail

OUT=${1:-/tmp/t5x_lite_e2e}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-300}
FT_STEPS=${FT_STEPS:-300}
FT_LR=${FT_LR:-0.003}
MAX_EXAMPLES=${MAX_EXAMPLES:-200}
PRETRAIN_DIR=${PRETRAIN_DIR:-$OUT/pretrain}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
stamp() { date -u +%H:%M:%S; }

echo "[$(stamp)] 1/3 pretrain: default config, $PRETRAIN_STEPS steps -> $PRETRAIN_DIR"
t5x-lite train --workdir "$PRETRAIN_DIR" --config.train.num_steps="$PRETRAIN_STEPS" \
    --config.train.checkpoint_every="$PRETRAIN_STEPS"

for task in local_translate_en_de local_wordnet_lexname local_summarize_debian; do
    echo "[$(stamp)] 2/3 fine-tune $task: $FT_STEPS steps, constant LR $FT_LR"
    t5x-lite train --config "$HERE/configs/finetune.py:$task" --workdir "$OUT/ft_$task" \
        --config.init_checkpoint="$PRETRAIN_DIR/checkpoints" \
        --config.train.num_steps="$FT_STEPS" --config.train.checkpoint_every="$FT_STEPS" \
        --config.train.eval_every="$FT_STEPS" --config.optimizer.learning_rate="$FT_LR" \
        --config.evaluation.num_examples=64
    echo "[$(stamp)] 3/3 eval $task (greedy, first $MAX_EXAMPLES validation examples)"
    t5x-lite eval --checkpoint "$OUT/ft_$task/checkpoints" --task "$task" --max-examples "$MAX_EXAMPLES" \
        --output "$OUT/eval"
done

python - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
summary = {}
for task in ("local_translate_en_de", "local_wordnet_lexname", "local_summarize_debian"):
    d = os.path.join(out, "eval", task)
    m = json.load(open(os.path.join(d, "metrics.json")))
    preds = [json.loads(l) for l in open(os.path.join(d, "predictions.jsonl"), encoding="utf-8")]
    summary[task] = {"metrics": m, "examples": preds[:5]}
    keys = {"local_translate_en_de": ["bleu"], "local_wordnet_lexname": ["accuracy", "macro_f1"],
            "local_summarize_debian": ["rouge2", "rougeL"]}[task]
    print(f"\n== {task} ({m['num_examples']} examples): " +
          ", ".join(f"{k}={m[k]:.2f}" for k in keys if k in m))
    for p in preds[:5]:
        print(f"  in:   {p['inputs'][:110]}\n  gold: {p['targets'][:110]}\n  pred: {p['prediction'][:110]}")
with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2, ensure_ascii=False)
print(f"\nsummary: {os.path.join(out, 'summary.json')}")
EOF
