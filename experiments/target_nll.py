"""How well a trained model fits held-out targets, apart from the beam search; prints a table.

  python experiments/target_nll.py --config=configs/sports.py:cpu --workdir=runs/sports_cpu \
      [--checkpoint=latest] [--split=valid] [--prepared=DIR]

For every user of the split it scores the true next SID:
  l2r      negative log-likelihood along digits 0, 1, .., N-1 (per step and in total). For the
           autoregressive model this is its own likelihood; for DIFF_GRM it is the chain of
           its masked conditionals p(s_t | s_<t), a proper distribution too. The two models'
           numbers compare directly: lower = a better fit of the targets.
  best     DIFF_GRM only: minus the best chain log-probability over all N! fill orders, the
           score confidence decoding gives a SID (its beams merge fill orders and keep the
           best). Not a normalised likelihood.
Each is given normalised over all codes and over the legal codes only (those that keep the
partial SID a catalogue item's, which is all decoding ever proposes).
The scoring is `diffgrm_jax.analysis.likelihood`.
"""

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags
from tqdm import tqdm

from diffgrm_jax import data as data_lib
from diffgrm_jax import experiment
from diffgrm_jax.analysis import likelihood
from diffgrm_jax.runtime import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config the workdir was trained with.",
                                          lock_config=True)
flags.DEFINE_string("workdir", None, "Training workdir.")
flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"], "Which checkpoint to score.")
flags.DEFINE_enum("split", "valid", ["valid", "test"], "Which split's targets to score.")
flags.DEFINE_string("prepared", None, "Prepared-data folder from reproduce.py --export_prepared.")
flags.DEFINE_integer("batch_size", 512, "Users per batch.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = _CONFIG.value
  data = (data_lib.load_prepared(FLAGS.prepared, config.data.max_history_len)
          if FLAGS.prepared else None)
  exp = experiment.Experiment(config, data)
  state, meta = experiment.restore(exp, FLAGS.workdir, FLAGS.checkpoint)
  kind = config.model.kind
  tables = exp.catalogue.tables()
  fns = {"all codes": jax.jit(lambda p, b: likelihood.target_log_probs(exp.model, p, b, kind)),
         "legal codes": jax.jit(lambda p, b: likelihood.target_log_probs(exp.model, p, b, kind,
                                                                         tables))}
  scores = {name: ([], []) for name in fns}  # name -> (l2r per step, best-order total)
  weight = []
  batches = data_lib.eval_batches(exp.data, FLAGS.split, batch_size=FLAGS.batch_size,
                                  buckets=tuple(config.data.length_buckets))
  for batch in tqdm(batches, desc="score", unit="batch"):
    inputs = {k: jnp.asarray(batch[k]) for k in ("hist_sids", "hist_mask", "target_sid")}
    for name, fn in fns.items():
      lp = np.asarray(fn(state.params, inputs), np.float64)
      l2r, best = likelihood.l2r_and_best(lp, kind)
      scores[name][0].append(l2r)
      scores[name][1].append(best if best is not None else l2r.sum(1))
    weight.append(batch["weight"] > 0)
  w = np.concatenate(weight)
  n = config.sid.n_digit
  print(f"\n{kind}{' ' + config.masking.strategy if kind == 'diffgrm' else ''}, "
        f"{FLAGS.checkpoint} checkpoint step {meta['step']}, {FLAGS.split}: {w.sum()} users "
        "(nats per SID; lower is better)")
  print("| normalised over | l2r NLL | " + " | ".join(f"step {t}" for t in range(n))
        + " | best-order |")
  print("|---|---|" + "---|" * n + "---|")
  for name, (l2r, best) in scores.items():
    l2r, best = np.concatenate(l2r)[w], np.concatenate(best)[w]
    print(f"| {name} | {-l2r.sum(1).mean():.3f} | "
          + " | ".join(f"{-l2r[:, t].mean():.3f}" for t in range(n)) + f" | {-best.mean():.3f} |")

if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run_cli(main)
