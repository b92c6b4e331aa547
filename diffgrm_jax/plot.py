"""PNG pictures of a training run and of the recorded results (needs the `[plot]` extra).

  python -m diffgrm_jax.plot --workdir=DIR         # DIR/plots/training.png, validation.png
  python -m diffgrm_jax.plot --results=experiments/results  # results_<dataset>.png per .jsonl
  python -m diffgrm_jax.plot --workdir=DIR --results=FILE.jsonl --out=OUT

From a workdir: training loss and learning rate against steps (from tb/scalars.jsonl, the
plain copy of the TensorBoard scalars) and the validation metrics against epochs with the
best checkpoint marked (from summary.json's `history`; while training runs, from the
`valid/*` scalars against steps). From results records (one JSON line per run, as
benchmarks/reproduce.py writes): the test metrics of every run side by side.

The plotting functions take the series explicitly, so what is drawn is what was logged.
"""

import json
import os

from absl import app
from absl import flags

from diffgrm_jax.runtime import cli
from diffgrm_jax.runtime import paths
from diffgrm_jax.runtime import scalar_log

METRICS = ("sid/recall@5", "sid/ndcg@5", "sid/recall@10", "sid/ndcg@10")
_LABELS = {"sid/recall@5": "R@5", "sid/ndcg@5": "N@5", "sid/recall@10": "R@10",
           "sid/ndcg@10": "N@10"}


class PlotError(cli.UserError, ValueError):
  """Nothing to plot, or the plotting library is missing; the message says what to do."""


def _figure(*size):
  try:
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise PlotError("plots need matplotlib: pip install 'diffgrm_jax[plot]' "
                    f"(ImportError: {e})") from None
  return Figure(figsize=size, layout="constrained")


def _save(fig, path):
  with paths.open(path, "wb") as f:
    fig.savefig(f, format="png", dpi=120)
  return path


def plot_training(loss_steps, loss, lr_steps, lr, path, title="training"):
  """Loss (left axis) and learning rate (right axis) against steps."""
  fig = _figure(7, 4)
  ax = fig.add_subplot()
  ax.plot(loss_steps, loss, color="tab:blue", label="train loss")
  ax.set_xlabel("step")
  ax.set_ylabel("loss", color="tab:blue")
  ax2 = ax.twinx()
  ax2.plot(lr_steps, lr, color="tab:orange", label="learning rate")
  ax2.set_ylabel("learning rate", color="tab:orange")
  ax.set_title(title)
  return _save(fig, path)


def plot_validation(x, metrics, best_x, path, xlabel="epoch", title="validation"):
  """Each metric ({name: values}) against x; a dashed line and a dot at the best checkpoint."""
  fig = _figure(7, 4)
  ax = fig.add_subplot()
  for name, values in metrics.items():
    line, = ax.plot(x, values, marker="o", markersize=3, label=_LABELS.get(name, name))
    if best_x in x:
      ax.plot([best_x], [values[x.index(best_x)]], "o", color=line.get_color(), markersize=8)
  if best_x is not None:
    ax.axvline(best_x, color="gray", linestyle="--", label=f"best checkpoint ({xlabel} {best_x})")
  ax.set_xlabel(xlabel)
  ax.xaxis.get_major_locator().set_params(integer=True)  # epochs and steps are whole
  ax.set_ylabel("SID-level metric")
  ax.set_title(title)
  ax.legend(fontsize=8)
  return _save(fig, path)


def plot_results(runs, metrics, path, title="results"):
  """Grouped bars: one group per metric, one bar per run. runs: labels; metrics: {name:
  [value of each run]}."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  fig = _figure(11, 4.5)
  ax = fig.add_subplot()
  width = 0.8 / max(len(runs), 1)
  xs = np.arange(len(metrics))
  for r, run in enumerate(runs):
    ax.bar(xs + (r - (len(runs) - 1) / 2) * width, [metrics[m][r] for m in metrics], width,
           label=run)
  ax.set_xticks(xs, [_LABELS.get(m, m) for m in metrics])
  ax.set_ylabel("test, SID level")
  ax.set_title(title)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars
  return _save(fig, path)


# ---------------------------------------------------------------- reading the logs
def training_series(workdir):
  """{'loss': (steps, values), 'lr': (steps, values)} from <workdir>/tb/scalars.jsonl."""
  scalars = scalar_log.read_scalars(paths.join(workdir, "tb"))
  missing = [t for t in ("train/loss", "train/lr") if t not in scalars]
  if missing:
    raise PlotError(f"{paths.join(workdir, 'tb', scalar_log.FILENAME)}: no {missing} "
                    "scalars (not a training workdir, or it logged no step yet).")
  return {"loss": scalars["train/loss"], "lr": scalars["train/lr"]}


def validation_series(workdir):
  """(x, {metric: values}, best x, x label) or None when no validation has run."""
  summary_path = paths.join(workdir, "summary.json")
  if paths.exists(summary_path):
    summary = paths.read_json(summary_path)
    history = summary.get("history") or []
    if history:
      x = [h["epoch"] for h in history]
      return x, {m: [h[m] for h in history] for m in METRICS}, summary.get("best_epoch"), "epoch"
  scalars = scalar_log.read_scalars(paths.join(workdir, "tb"))
  if "valid/score" not in scalars:
    return None
  steps, scores = scalars["valid/score"]
  best = steps[scores.index(max(scores))]  # the first of equal scores, as training keeps it
  return steps, {m: scalars[f"valid/{m}"][1] for m in METRICS}, best, "step"


def run_label(row):
  if row["model_kind"] == "popularity":
    name = "popularity"
  elif row["model_kind"] in ("autoregressive", "sasrec"):
    name = {"autoregressive": "autoregressive", "sasrec": "SASRec"}[row["model_kind"]]
  else:
    name = f"DIFF_GRM {row['masking']} + {row['decoding']}"
  return f"{name} ({row['label']})" if row.get("label") else name


def results_series(path):
  """(run labels, {metric: test values}) from a results .jsonl (one run a line)."""
  runs, values = [], {m: [] for m in METRICS}
  with paths.open(path) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        test = row["test"]
        vals = [float(test[m]) for m in METRICS]
      except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise PlotError(f"{path}:{lineno}: not a results record ({type(e).__name__}: {e}).") \
            from None
      runs.append(run_label(row))
      for m, v in zip(METRICS, vals):
        values[m].append(v)
  if not runs:
    raise PlotError(f"{path}: no results records.")
  return runs, values


# ---------------------------------------------------------------- command line
def plot_workdir(workdir, out=None):
  """Writes training.png (and validation.png once validation ran); returns the paths."""
  if not paths.isdir(workdir):
    raise PlotError(f"workdir {workdir} does not exist; pass the --workdir a training run wrote")
  out = out or paths.join(workdir, "plots")
  series = training_series(workdir)
  written = [plot_training(*series["loss"], *series["lr"], paths.join(out, "training.png"),
                           title=f"training: {workdir}")]
  val = validation_series(workdir)
  if val is not None:
    x, metrics, best, xlabel = val
    written.append(plot_validation(x, metrics, best, paths.join(out, "validation.png"),
                                   xlabel=xlabel, title=f"validation: {workdir}"))
  return written


def plot_results_files(results, out=None):
  """One results_<dataset>.png per .jsonl (a file, or every .jsonl in a folder)."""
  files = ([paths.join(results, n) for n in paths.listdir(results) if n.endswith(".jsonl")]
           if paths.isdir(results) else [results])
  if not files or not paths.exists(files[0]):
    raise PlotError(f"{results}: no results .jsonl file there.")
  written = []
  for path in files:
    dataset = os.path.basename(path)[:-len(".jsonl")]
    runs, metrics = results_series(path)
    dest = paths.join(out or os.path.dirname(path) or ".", f"results_{dataset}.png")
    written.append(plot_results(runs, metrics, dest, title=f"{dataset}: test split"))
  return written


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.workdir and not f.results:
    raise PlotError("give --workdir=DIR (a training run) and/or --results=PATH (.jsonl records)")
  written = []
  if f.workdir:
    written += plot_workdir(f.workdir, f.out)
  if f.results:
    written += plot_results_files(f.results, f.out)
  for p in written:
    print(p)


def define_flags():
  flags.DEFINE_string("workdir", None, "Training workdir (reads tb/scalars.jsonl, summary.json).")
  flags.DEFINE_string("results", None, "Results .jsonl file or a folder of them.")
  flags.DEFINE_string("out", None, "Folder for the PNGs (default: WORKDIR/plots, or beside the "
                      "results file).")


if __name__ == "__main__":
  define_flags()
  cli.run_cli(main)
