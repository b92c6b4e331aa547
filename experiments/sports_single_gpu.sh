#!/usr/bin/env bash
# The Sports paper recipe in one fixed window on one accelerator: DIFF_GRM, then the
# autoregressive baseline, each tested at its best checkpoint before the window closes.
#
#   bash experiments/sports_single_gpu.sh OUT              # on a GPU/TPU host
#   bash experiments/sports_single_gpu.sh OUT --dry-run    # the same lines on CPU, tiny data
#
# Environment (all optional):
#   BUDGET_S        seconds for the whole script, counted from its start (default 600)
#   TEST_RESERVE_S  seconds kept per run for its final validation and test (default 60)
#   RUNS            which runs, in order (default "diffgrm autoregressive")
#   WHEELS          a folder of wheels (grain, array-record, ml_collections, tensorboardX,
#                   faiss-cpu, ..., and setuptools + wheel, which pip needs to install a
#                   checkout) to install from, offline (pip --no-index --find-links)
#   PREPARED        prepared data (python experiments/reproduce.py --config=configs/sports.py
#                   --export_prepared=DIR on any CPU host); default: prepare here (faiss)
#   EXTRA           more --config flags for every run
#
# Each run gets train.time_limit_s = its share of what is left of BUDGET_S minus
# TEST_RESERVE_S, so a run that reaches it stops training and is still tested. As soon as
# a run ends, OUT/<run>/ holds its summary.json, tb/scalars.jsonl, log and results row
# (<dataset>.jsonl, as experiments/reproduce.py appends it); a table of all runs ends it.
# The script stops at once when JAX finds no accelerator (except with --dry-run).
set -u
out=${1:?usage: bash experiments/sports_single_gpu.sh OUT [--dry-run]}
dry=${2:-}
start=$(date +%s)
budget=${BUDGET_S:-600}
reserve=${TEST_RESERVE_S:-60}
runs=(${RUNS:-diffgrm autoregressive})
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

# 1. The package from this checkout (and its wheels, offline, when WHEELS is set).
pip_args=(-q -e .)
[ -n "${WHEELS:-}" ] && pip_args+=(--no-index --find-links "$WHEELS")
[ "$dry" = "--dry-run" ] && pip_args+=(--dry-run --no-deps)
"$py" -m pip install "${pip_args[@]}" || { echo "error: pip install failed" >&2; exit 1; }

# 2. The accelerator, or stop now (a CPU run of the paper recipe would take days).
backend=$("$py" -c "import jax; print(jax.default_backend())") || exit 1
if [ "$dry" = "--dry-run" ]; then
  echo "dry run on $backend: tiny data and model"
  config=(--config=configs/demo.py --config.data.synthetic.n_users=100
          --config.data.synthetic.n_items=60 --config.data.synthetic.n_groups=6
          --config.data.synthetic.emb_dim=16 --config.data.synthetic.max_len=8
          --config.data.max_history_len=8 "--config.data.length_buckets=(8,)"
          --config.sid.codebook_size=8 --config.sid.pca_dim=8 --config.model.d_model=16
          --config.model.n_heads=1 --config.model.n_inner=32 --config.model.n_dec_layers=1
          --config.train.batch_size=32 --config.train.epochs=2
          --config.train.eval_start_epoch=1 --config.decode.valid_beam=10
          --config.decode.test_beam=10 --config.decode.batch_size=32)
elif [ "$backend" = "cpu" ]; then
  echo "error: JAX found no accelerator (backend cpu); install jax[cuda12] or jax[tpu]" >&2
  exit 1
else
  config=(--config=configs/sports.py)
fi
[ -n "${PREPARED:-}" ] && config+=(--prepared="$PREPARED")

# 3. The runs, one after the other, each with its share of the window.
status=0
for i in "${!runs[@]}"; do
  run=${runs[$i]}
  left=$(( budget - ($(date +%s) - start) ))
  limit=$(( left / (${#runs[@]} - i) - reserve ))
  if [ "$limit" -le 0 ]; then
    echo "error: no time left for $run (${left} s left, ${reserve} s reserved for its test)" >&2
    status=1; break
  fi
  case $run in
    diffgrm) kind=();;
    autoregressive) kind=(--config.model.kind=autoregressive --config.decode.strategy=left_to_right);;
    *) echo "error: unknown run $run (diffgrm or autoregressive)" >&2; status=1; break;;
  esac
  mkdir -p "$out/$run"
  work="$out/$run/workdir"
  echo "$run: train.time_limit_s=$limit"
  "$py" experiments/reproduce.py "${config[@]}" "${kind[@]}" --workdir="$work" \
      --results_dir="$out/$run" --config.train.time_limit_s="$limit" \
      --label="paper recipe in a ${budget} s window" ${EXTRA:-} >"$out/$run/log" 2>&1
  rc=$?
  cp "$work/summary.json" "$out/$run/" 2>/dev/null
  mkdir -p "$out/$run/tb" && cp "$work/tb/scalars.jsonl" "$out/$run/tb/" 2>/dev/null
  echo "$run: exit $rc after $(( $(date +%s) - start )) s"
  [ $rc -ne 0 ] && status=1
done

"$py" - "$out" "${runs[@]}" <<'EOF'
import json, os, sys
out, runs = sys.argv[1], sys.argv[2:]
print("\n| run | epochs | steps | stopped | compile s | train loop s | valid s | ckpt s | "
      "final eval s | wall s | test SID N@10 | test item N@10 |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for run in runs:
  path = os.path.join(out, run, "summary.json")
  if not os.path.exists(path):
    print(f"| {run} | no summary (see {run}/log) |"); continue
  s = json.load(open(path)); t = s["timing"]
  stop = "time" if s["stopped_by_time_limit"] else "early" if s["stopped_early"] else "done"
  print(f"| {run} | {s['epochs_run']} | {s['steps']} | {stop} | {t.get('compile_s', 0):.0f} | "
        f"{t['train_loop_s']:.0f} | {t['valid_s']:.0f} | {t['checkpoint_s']:.0f} | "
        f"{t['final_eval_s']:.0f} | {s['wall_time_s']:.0f} | {s['test']['sid/ndcg@10']:.4f} | "
        f"{s['test']['item/ndcg@10']:.4f} |")
EOF
exit $status
