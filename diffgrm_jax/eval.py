"""Evaluate the best (or latest) checkpoint of a workdir on the current devices.

  python -m diffgrm_jax.eval --workdir=/tmp/demo [--split=test] [--checkpoint=latest]

Uses the workdir's own config.json and data/ (workdir.py); `--config=...` (with
`--config.<field>` overrides, e.g. of decode) is optional and must agree with the trained
model and SIDs; workdirs trained before config.json was written need it. Restores the
checkpoint onto a mesh built for the devices present now (their count may differ from
training), decodes the split with its decode settings (`decode.test_beam` for test,
`decode.valid_beam` for valid, or --beam), prints Recall@5/10 and NDCG@5/10 at SID level
and at item level under both item rankings (`item/` the configured one, `item_<other>/`
the other) and writes WORKDIR/eval_<split>.json. The work is `experiment.evaluate_workdir`.
"""

from absl import flags
import jax

from diffgrm_jax import experiment
from diffgrm_jax.evaluation import reporting
from diffgrm_jax.runtime import cli
from diffgrm_jax.runtime import distributed
from diffgrm_jax.runtime import host_memory
from diffgrm_jax.runtime import paths


def define_flags():
  """The CLI's flags; defined only when run as a program."""
  cli.define_config_flag("Optional: config file the workdir was trained with (needed only "
                         "for workdirs without config.json); --config.<field>=... overrides.")
  flags.DEFINE_string("workdir", None, "Training workdir holding best/ (and checkpoints/).")
  flags.DEFINE_enum("split", "test", ["test", "valid"], "Which split to evaluate.")
  flags.DEFINE_integer("beam", None, "Beam width (default: decode.test_beam for test, "
                       "decode.valid_beam for valid).")
  flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to restore.")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  distributed.maybe_initialize()
  host_memory.trim_after_compiles()
  FLAGS = flags.FLAGS
  result = experiment.evaluate_workdir(FLAGS.config, FLAGS.workdir, FLAGS.split, FLAGS.beam,
                                       FLAGS.checkpoint)
  if jax.process_index() == 0:
    print(reporting.format_table({f"{FLAGS.split} (step {result['step']})": result}))
    path = paths.join(FLAGS.workdir, f"eval_{FLAGS.split}.json")
    paths.write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
  define_flags()
  cli.run_cli(main)
