"""The plot command: PNGs from a workdir and from results records, and the series handed
to the plotting calls equal the logged values (the data is checked, not the pixels)."""

import json
import os
import subprocess
import sys

import pytest

from diffgrm_jax import plot
from diffgrm_jax.runtime import scalar_log
from diffgrm_jax.runtime import tb_writer

from support.configs import ROOT
PNG = b"\x89PNG\r\n\x1a\n"


def _metrics(e):
  return {"sid/recall@5": 0.01 * e, "sid/ndcg@5": 0.005 * e, "sid/recall@10": 0.02 * e,
          "sid/ndcg@10": 0.01 * e + (0.05 if e == 2 else 0)}


def _workdir(tmp_path):
  """A run killed after step 60 whose last checkpoint was step 40, then resumed: the
  resumed run logs steps 40.. again with other values; validation at epochs 1..3."""
  wd = tmp_path / "run"
  w = tb_writer.Writer(str(wd / "tb"))
  for s in range(0, 80, 20):
    w.scalars(s, {"train/loss": 10.0 - s / 10, "train/lr": s * 1e-4, "train/grad_norm": 1.0})
  w.close()
  w = tb_writer.Writer(str(wd / "tb"), resume_step=40)
  for s in range(40, 120, 20):
    w.scalars(s, {"train/loss": 5.0 - s / 100, "train/lr": s * 2e-4})
  w.scalars(100, {"train/rows_per_s": 123.0})  # a call with other tags only
  w.close()
  history = [{"epoch": e, "step": 40 * e, "score": 0.1 * e, **_metrics(e)} for e in (1, 2, 3)]
  (wd / "summary.json").write_text(json.dumps({"history": history, "best_epoch": 2}))
  return str(wd)


def test_resumed_log_drops_purged_steps(tmp_path):
  wd = _workdir(tmp_path)
  scalars = scalar_log.read_scalars(os.path.join(wd, "tb"))
  assert scalars["train/loss"] == ([0, 20, 40, 60, 80, 100], [10.0, 8.0, 4.6, 4.4, 4.2, 4.0])
  assert scalars["train/grad_norm"] == ([0, 20], [1.0, 1.0])
  assert scalars["train/rows_per_s"] == ([100], [123.0])


def test_plot_workdir_hands_over_the_logged_series(tmp_path, monkeypatch):
  wd = _workdir(tmp_path)
  calls = {}
  for name in ("plot_training", "plot_validation"):
    real = getattr(plot, name)

    def spy(*args, _real=real, _name=name, **kwargs):
      calls[_name] = args
      return _real(*args, **kwargs)

    monkeypatch.setattr(plot, name, spy)
  written = plot.plot_workdir(wd)
  assert [os.path.basename(p) for p in written] == ["training.png", "validation.png"]
  for p in written:
    with open(p, "rb") as f:
      assert f.read(8) == PNG and os.path.getsize(p) > 5000
  steps = [0, 20, 40, 60, 80, 100]
  assert calls["plot_training"][:4] == (
      steps, [10.0, 8.0, 4.6, 4.4, 4.2, 4.0], steps, [0.0, 0.002, 0.008, 0.012, 0.016, 0.02])
  x, metrics, best = calls["plot_validation"][:3]
  assert x == [1, 2, 3] and best == 2
  assert metrics == {m: [_metrics(e)[m] for e in (1, 2, 3)] for m in plot.METRICS}


def test_validation_from_scalars_while_training(tmp_path):
  wd = tmp_path / "run"
  w = tb_writer.Writer(str(wd / "tb"))
  for step, score in ((50, 0.2), (100, 0.3), (150, 0.3)):
    w.scalars(step, {"valid/score": score} | {f"valid/{m}": score for m in plot.METRICS})
  w.close()
  x, metrics, best, xlabel = plot.validation_series(str(wd))
  assert (x, best, xlabel) == ([50, 100, 150], 100, "step")  # ties: the first is kept
  assert metrics["sid/ndcg@10"] == [0.2, 0.3, 0.3]


def test_results_chart_series(tmp_path, monkeypatch):
  path = os.path.join(ROOT, "experiments", "results", "Sports_and_Outdoors.jsonl")
  rows = [json.loads(l) for l in open(path) if l.strip()]
  seen = {}
  real = plot.plot_results
  monkeypatch.setattr(plot, "plot_results",
                      lambda *a, **k: seen.setdefault("args", a) and real(*a, **k))
  (png,) = plot.plot_results_files(path, str(tmp_path))
  assert os.path.basename(png) == "results_Sports_and_Outdoors.png"
  with open(png, "rb") as f:
    assert f.read(8) == PNG
  runs, metrics = seen["args"][:2]
  assert runs == [plot.run_label(r) for r in rows] and len(runs) == len(rows)
  assert metrics == {m: [r["test"][m] for r in rows] for m in plot.METRICS}


def test_bad_inputs(tmp_path):
  with pytest.raises(plot.PlotError, match="does not exist"):
    plot.plot_workdir(str(tmp_path / "nope"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(plot.PlotError, match=r"scalars.jsonl: no \['train/loss', 'train/lr'\]"):
    plot.plot_workdir(str(tmp_path / "empty"))
  bad = tmp_path / "r.jsonl"
  bad.write_text('{"model_kind": "diffgrm", "test": {}}\n')
  with pytest.raises(plot.PlotError, match=r"r.jsonl:1: not a results record \(KeyError"):
    plot.plot_results_files(str(bad))


def test_command_line(tmp_path):
  wd = _workdir(tmp_path)
  out = subprocess.run([sys.executable, "-m", "diffgrm_jax.plot", f"--workdir={wd}"],
                       capture_output=True, text=True, check=False, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT))
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == [os.path.join(wd, "plots", "training.png"),
                                os.path.join(wd, "plots", "validation.png")]
