"""experiments/sports_single_gpu.sh --dry-run: every step of the one-window script on CPU and
tiny data (install check, both runs with their shares of the window, outputs per run as soon
as it ends, the closing table)."""

import json
import os
import re
import subprocess
import sys

from support.configs import ROOT

SCRIPT = os.path.join(ROOT, "experiments", "sports_single_gpu.sh")


def test_dry_run_writes_each_runs_outputs_and_the_table(tmp_path):
  out = tmp_path / "out"
  env = dict(os.environ, BUDGET_S="600", TEST_RESERVE_S="30", PYTHON=sys.executable,
             DIFFGRM_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
  proc = subprocess.run(["bash", SCRIPT, str(out), "--dry-run"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert "dry run on cpu" in proc.stdout
  limits = [int(x) for x in re.findall(r"train\.time_limit_s=(\d+)", proc.stdout)]
  # Counted from the script's start: the first run gets half the window less its reserve,
  # the second what is left then.
  assert len(limits) == 2 and limits[0] <= 600 // 2 - 30 and limits[0] < limits[1] < 600 - 30
  for run, kind in (("diffgrm", "diffgrm"), ("autoregressive", "autoregressive")):
    with open(out / run / "summary.json") as f:
      s = json.load(f)
    assert s["model_kind"] == kind and s["steps"] == 18 and not s["stopped_by_time_limit"]
    assert os.path.getsize(out / run / "tb" / "scalars.jsonl") > 0
    rows = [json.loads(line) for line in open(out / run / "synthetic.jsonl")]
    assert len(rows) == 1 and rows[0]["model_kind"] == kind
    assert re.search(rf"\| {run} \| 2 \| 18 \| done \|", proc.stdout)
