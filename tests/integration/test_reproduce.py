"""experiments/reproduce.py records one complete JSON line per run (without the machine's
folders), and experiments/render_results.py renders those lines with the paper's numbers
beside them."""

import importlib.util
import json
import os
import subprocess
import sys

from support.configs import ROOT
from support.configs import TINY_RUN
from support.runs import flags

METRICS = {f"{level}/{m}@{k}" for level in ("sid", "item") for m in ("recall", "ndcg")
           for k in (5, 10)}


def _reproduce(tmp_path, *args):
  cmd = [sys.executable, "experiments/reproduce.py", "--config=configs/demo.py",
         f"--results_dir={tmp_path / 'results'}", "--label=test run",
         *flags(dict(TINY_RUN, **{"data.cache_dir": str(tmp_path / "cache")})), *args]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_reproduce_appends_a_full_row_per_run_and_render_shows_them(tmp_path):
  _reproduce(tmp_path, f"--workdir={tmp_path / 'wd'}", "--config.masking.strategy=random")
  _reproduce(tmp_path, "--popularity")
  path = tmp_path / "results" / "synthetic.jsonl"
  rows = [json.loads(line) for line in open(path)]
  assert [r["model_kind"] for r in rows] == ["diffgrm", "popularity"]
  run = rows[0]
  assert run["masking"] == "random" and run["decoding"] == "confidence"
  assert run["epochs_run"] == 2 and run["steps"] == 18 and run["label"] == "test run"
  assert "--config.masking.strategy=random" in run["overrides"]
  assert run["config"]["masking"]["strategy"] == "random" and len(run["config_hash"]) == 12
  assert run["device_kind"] == "cpu" and run["device_count"] == 1 and run["jax_version"]
  assert METRICS <= set(run["valid"]) and METRICS <= set(run["test"])
  assert set(run["timing"]) >= {"train_loop_s", "valid_s", "final_eval_s"}
  assert run["wall_time_s"] > 0 and not run["stopped_by_time_limit"]
  # The recorded test metrics are the run's own summary's.
  with open(tmp_path / "wd" / "summary.json") as f:
    assert json.load(f)["test"] == run["test"]

  assert str(tmp_path) not in open(path).read()  # no folder of this machine is recorded
  assert "cache_dir" not in run["config"]["data"] and "data_dir" not in run["config"]["data"]
  spec = importlib.util.spec_from_file_location(
      "render_results", os.path.join(ROOT, "experiments", "render_results.py"))
  render_results = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(render_results)
  table = render_results.render(str(tmp_path / "results"))
  line = next(l for l in table.splitlines() if l.startswith("| DIFF_GRM random + confidence"))
  assert f"{run['test']['sid/ndcg@10']:.4f}" in line and "| test run |" in line
  assert "--config.masking.strategy=random --workdir=DIR`" in table
  assert "| popularity |" in table
