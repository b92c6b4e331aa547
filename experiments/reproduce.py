"""Train and evaluate one config end to end; append one JSON line to experiments/results/.

  python experiments/reproduce.py --config=configs/sports.py:cpu --workdir=runs/sports_cpu
  python experiments/reproduce.py --config=configs/sports.py:cpu --workdir=runs/sports_cpu_seed \
      --config.masking.strategy=random --config.decode.strategy=left_to_right
  python experiments/reproduce.py --config=configs/sports.py:cpu --popularity

Each line of `experiments/results/<dataset>.jsonl` records the dataset, model kind,
masking and decoding strategies, the full config with its hash and the command-line
overrides, epochs run, wall time (and `timing`, its breakdown), device kind and count,
jax version, and validation and test Recall/NDCG@5/10 at SID and item level.
`--popularity` records the popularity baseline on the same SIDs instead of training.
`experiments/render_results.py` turns the files into the README's results table.
"""

import hashlib
import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from diffgrm_jax import data as data_lib
from diffgrm_jax.evaluation import metrics as metrics_lib
from diffgrm_jax.training import loop as trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe, e.g. configs/sports.py:cpu.",
                                          lock_config=True)
flags.DEFINE_string("workdir", None, "Training workdir (resumes if it has a checkpoint).")
flags.DEFINE_bool("popularity", False, "Record the popularity baseline instead of training.")
flags.DEFINE_string("results_dir", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                    "Folder of the <dataset>.jsonl files.")
flags.DEFINE_string("label", "", "Free-text label stored with the row (e.g. 'cpu budget').")
flags.DEFINE_string("export_prepared", None, "Write the prepared data (sequences, SIDs, ids; "
                    "plain .npy/.json files) to this folder and exit: prepare on one host, "
                    "train on another.")
flags.DEFINE_string("prepared", None, "Train on a file written by --export_prepared instead of "
                    "preparing (no raw data or faiss needed).")
FLAGS = flags.FLAGS


# Where this machine keeps data and caches: not part of the experiment, and not recorded.
MACHINE_FIELDS = ("data_dir", "cache_dir")


def portable_config(config):
  """The config as a dict without this machine's folders (`MACHINE_FIELDS` of `data`)."""
  cfg = config.to_dict()
  for name in MACHINE_FIELDS:
    cfg["data"].pop(name, None)
  return cfg


def config_hash(cfg):
  return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _record(config, row):
  cfg = portable_config(config)
  row.update(
      config_hash=config_hash(cfg),
      config_file=next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), None),
      overrides=[a for a in sys.argv[1:] if a.startswith("--config.")
                 and a.split("=")[0].split(".")[-1] not in MACHINE_FIELDS],
      config=cfg, label=FLAGS.label, device_kind=jax.devices()[0].device_kind,
      device_count=jax.device_count(), jax_version=jax.__version__,
      date=time.strftime("%Y-%m-%d %H:%M:%S"))
  os.makedirs(FLAGS.results_dir, exist_ok=True)
  path = os.path.join(FLAGS.results_dir, f"{config.data.name}.jsonl")
  with open(path, "a") as f:
    f.write(json.dumps(row, default=str) + "\n")
  print(f"appended to {path}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  t0 = time.time()
  if FLAGS.prepared:
    data = data_lib.load_prepared(FLAGS.prepared, config.data.max_history_len)
  else:
    data = data_lib.prepare_data(config)
  if FLAGS.export_prepared:
    data_lib.save_prepared(data, FLAGS.export_prepared, config.data.max_history_len)
    print(f"wrote {FLAGS.export_prepared}")
    return
  if FLAGS.popularity:
    row = {"dataset": data.name, "model_kind": "popularity", "masking": None, "decoding": None,
           "epochs_run": 0,
           "valid": metrics_lib.popularity_baseline(data.item_train_counts, data.sids, data.valid.target),
           "test": metrics_lib.popularity_baseline(data.item_train_counts, data.sids, data.test.target)}
  else:
    if not FLAGS.workdir:
      raise app.UsageError("--workdir is required unless --popularity")
    s = trainer.train_and_evaluate(config, FLAGS.workdir, data=data)
    if s.get("preempted"):
      print("preempted: rerun the same command to resume; nothing recorded")
      return
    row = {k: s[k] for k in ("dataset", "model_kind", "masking", "decoding", "epochs_run",
                             "steps", "best_epoch", "n_params", "valid", "test", "timing",
                             "stopped_early", "stopped_by_time_limit", "beams")}
  row["wall_time_s"] = round(time.time() - t0, 1)
  _record(config, row)


if __name__ == "__main__":
  app.run(main)
