"""Train, validate and test: the command line of `training.loop.train_and_evaluate`.

  python -m diffgrm_jax.train --config=configs/demo.py --workdir=/tmp/demo \
      [--config.<field>=<value> ...]

Rerunning the same command on the same workdir resumes from the latest checkpoint and
ends bitwise equal to a run that was never interrupted; SIGTERM saves and exits cleanly
(code 0). Bad input ends the command with one line, `error: <message>`, and exit code 1.
See docs/configuration.md for the fields and docs/design.md for what runs where.
"""

from absl import flags

from diffgrm_jax.runtime import cli
from diffgrm_jax.runtime import cpu_devices
from diffgrm_jax.runtime import distributed
from diffgrm_jax.training import loop as trainer


def define_flags():
  """The CLI's flags; defined only when run as a program, so importing is side-effect free."""
  cli.define_config_flag(
      "Config file, e.g. configs/demo.py; override fields with --config.<field>=...")
  flags.DEFINE_string("workdir", None,
                      "Folder for checkpoints, logs and summary.json (resumes if it has a checkpoint).")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  cpu_devices.split_host(flags.FLAGS.config)  # before anything starts JAX
  distributed.maybe_initialize()
  trainer.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  define_flags()
  cli.run_cli(main, trainer.TrainingError)
