"""Item-level metrics of one trained model under both item rankings, from one decode.

  python experiments/item_ranking.py --config=configs/sports.py:cpu --workdir=DIR \
      [--checkpoint=latest] [--split=test] [--out=FILE.json]

Decodes every user of the split once with `python -m diffgrm_jax.eval`'s code, all beams
(the split's beam width) feeding the item list, and ranks items two ways
(diffgrm_jax/sid/ranking.py): `expand` (each
ranked SID expanded into its whole collision group, the list cut at 10) and `score`
(every item of every decoded SID scored by log P(SID) + log P(item | SID)). SID-level
metrics use the top-10 SIDs as evaluation does. Prints one JSON object (and writes it to
--out): the metrics, the beam and the command's settings.
"""

import json
import time

from absl import app
from absl import flags

from diffgrm_jax import experiment
from diffgrm_jax.runtime import cli

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = FLAGS.config
  # Every beam feeds the item list; evaluation ranks items both ways from one decode.
  config.decode.item_sids = 0
  config.decode.item_ranking = "score"
  config.decode.item_prior_alpha = FLAGS.alpha
  exp = experiment.Experiment(config)
  state, meta = experiment.restore(exp, FLAGS.workdir, FLAGS.checkpoint)
  settings = exp.search_settings(FLAGS.split)
  t0 = time.time()
  result = exp.evaluate(state.params, FLAGS.split, settings)
  out = {"split": FLAGS.split, "beam": settings.widths[-1], "sids_ranked": settings.item_sids,
         "alpha": FLAGS.alpha, "checkpoint": FLAGS.checkpoint, "step": int(meta["step"]),
         "n_users": result.pop("n_users"), "decode_s": round(time.time() - t0, 1)}
  for key, value in result.items():  # item/ is the score ranking here
    out[key.replace("item/", "item_score/", 1)] = value
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
