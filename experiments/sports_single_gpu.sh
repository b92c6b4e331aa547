#!/usr/bin/env bash
# The Sports paper recipe for DIFF_GRM and for the autoregressive baseline, side by side on
# one GPU, inside one fixed-length time budget (any single-GPU host with jax[cuda]).
#
#   bash experiments/sports_single_gpu.sh PREPARED OUT [TRAIN_SECONDS] [extra --config flags...]
#
# PREPARED: data + SIDs written here by
#   python experiments/reproduce.py --config=configs/sports.py --export_prepared=DIR
# OUT: folder for the two logs, the two summaries and the results rows (one JSON line
# each, as experiments/reproduce.py appends them). TRAIN_SECONDS (default 0: no limit) is
# train.time_limit_s for both runs: a run that reaches it stops training and still tests its
# best checkpoint, and its summary says stopped_by_time_limit. Extra flags go to both runs
# (e.g. a smaller model for a dry run on a CPU).
#
# Both processes share the GPU (each may take 45% of its memory). The baseline validates
# with beam 32 and tests with beam 256 per step, like DIFF_GRM's confidence decoding.
set -u
prepared=$1; out=$2; limit=${3:-0}; shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$out"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}
export PYTHONUNBUFFERED=1
common=(--config=configs/sports.py --prepared="$prepared" --results_dir="$out" --verbosity=-1
        --config.train.time_limit_s="$limit")
python3 experiments/reproduce.py "${common[@]}" --workdir=/tmp/sports_single_gpu_diffgrm \
    --label="paper recipe, time limit ${limit} s" "$@" >"$out/diffgrm.log" 2>&1 &
dg=$!
python3 experiments/reproduce.py "${common[@]}" --workdir=/tmp/sports_single_gpu_autoregressive \
    --config.model.kind=autoregressive --config.decode.strategy=left_to_right \
    --label="paper recipe, time limit ${limit} s" "$@" \
    >"$out/autoregressive.log" 2>&1 &
ar=$!
wait $dg; rc_dg=$?
wait $ar; rc_ar=$?
for run in diffgrm autoregressive; do
  cp "/tmp/sports_single_gpu_$run/summary.json" "$out/summary_$run.json" 2>/dev/null
done
python3 - "$out" <<'EOF'
import json, sys, os
out = sys.argv[1]
print(f"\n| run | epochs | steps | stopped | train loop s | valid s | ckpt s | test R@10 | test N@10 |")
print("|---|---|---|---|---|---|---|---|---|")
for run in ("diffgrm", "autoregressive"):
  path = os.path.join(out, f"summary_{run}.json")
  if not os.path.exists(path):
    print(f"| {run} | no summary (see {run}.log) |"); continue
  s = json.load(open(path)); t = s["timing"]
  stop = "time" if s["stopped_by_time_limit"] else "early" if s["stopped_early"] else "done"
  print(f"| {run} | {s['epochs_run']} | {s['steps']} | {stop} | {t['train_loop_s']:.0f} | "
        f"{t['valid_s']:.0f} | {t['checkpoint_s']:.0f} | {s['test']['sid/recall@10']:.4f} | "
        f"{s['test']['sid/ndcg@10']:.4f} |")
EOF
echo "exit codes: diffgrm $rc_dg, autoregressive $rc_ar"
exit $(( rc_dg || rc_ar ))
