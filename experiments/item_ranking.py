"""Item-level metrics of one trained model under both item rankings, from one decode.

  python experiments/item_ranking.py --config=configs/sports.py:cpu --workdir=DIR \
      [--checkpoint=latest] [--split=test] [--out=FILE.json]

Decodes every user of the split once, keeping all beams (the split's beam width) as SIDs
with their scores, then ranks items two ways (diffgrm_jax/ranking.py): `expand` (each
ranked SID expanded into its whole collision group, the list cut at 10) and `score`
(every item of every decoded SID scored by log P(SID) + log P(item | SID)). SID-level
metrics use the top-10 SIDs as evaluation does. Prints one JSON object (and writes it to
--out): the metrics, the beam and the command's settings.
"""

import json
import time

from absl import app
from absl import flags
import jax
import numpy as np
from tqdm import tqdm

from diffgrm_jax import cli
from diffgrm_jax import data as data_lib
from diffgrm_jax import decoding
from diffgrm_jax import evaluation
from diffgrm_jax import experiment
from diffgrm_jax import metrics
from diffgrm_jax import ranking

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = FLAGS.config
  exp = experiment.Experiment(config)
  state, meta = experiment.restore(exp, FLAGS.workdir, FLAGS.checkpoint)
  base = exp.decode_settings(FLAGS.split)
  beam = base.widths[-1]
  settings = decoding.DecodeSettings(
      strategy=base.strategy, widths=base.widths, top_k=beam, greedy_last=base.greedy_last,
      order_seed=base.order_seed, renormalize=base.renormalize, batch_size=base.batch_size)
  fn, tables = evaluation.compiled_decoder(exp.model, exp.catalogue, settings)
  cat = exp.catalogue
  prior = ranking.item_log_prior(cat, exp.data.item_train_counts, FLAGS.alpha)
  ranks = {"sid": [], "item_expand": [], "item_score": []}
  weights = []
  t0 = time.time()
  batches = data_lib.eval_batches(exp.data, FLAGS.split, batch_size=settings.batch_size,
                                  buckets=tuple(config.data.length_buckets))
  for batch in tqdm(batches, desc=f"decode {settings.describe()}", unit="batch"):
    pred, scores, valid = jax.tree.map(np.asarray, fn(
        {"params": state.params}, tables, np.asarray(batch["hist_sids"], np.int32),
        np.asarray(batch["hist_mask"], bool)))
    ranks["sid"].append(metrics.sid_ranks(pred[:, :10], valid[:, :10], batch["target_sid"]))
    groups = np.where(valid, cat.sid_group(pred), -1)
    for method in ("expand", "score"):
      items, _ = ranking.rank_items(cat, groups, scores, prior, 10, method)
      ranks[f"item_{method}"].append(
          ranking.item_hit_ranks(items, batch["target_item"], metrics.MISS))
    weights.append((np.asarray(batch["weight"]) > 0).astype(np.float64))
  w = np.concatenate(weights)
  out = {"split": FLAGS.split, "beam": beam, "sids_ranked": beam, "alpha": FLAGS.alpha,
         "checkpoint": FLAGS.checkpoint, "step": int(meta["step"]), "n_users": float(w.sum()),
         "decode_s": round(time.time() - t0, 1)}
  for level, r in ranks.items():
    out.update({f"{level}/{k}": v
                for k, v in metrics.recall_ndcg(np.concatenate(r), metrics.KS, w).items()})
  print(json.dumps(out, indent=1))
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  cli.define_config_flag("Config the workdir was trained with, e.g. configs/sports.py:cpu.")
  flags.DEFINE_string("workdir", None, "Training workdir.")
  flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to restore.")
  flags.DEFINE_enum("split", "test", ["test", "valid"], "Which split to decode.")
  flags.DEFINE_float("alpha", 1.0, "Additive smoothing of P(item | SID).")
  flags.DEFINE_string("out", None, "Also write the JSON here.")
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run_cli(main)
