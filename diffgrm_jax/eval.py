"""Evaluate the best checkpoint of a workdir on the current devices.

  python -m diffgrm_jax.eval --config=configs/demo.py --workdir=/tmp/demo [--split=test]

Restores WORKDIR/best onto a mesh built from the config for the devices present now
(their count may differ from training), decodes the split with `decode.test_beam`
(or --beam), prints Recall@5/10 and NDCG@5/10 at SID and item level and writes
WORKDIR/eval_<split>.json.
"""

import json
import os

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from diffgrm_jax import checkpointing
from diffgrm_jax import config_checks
from diffgrm_jax import reporting
from diffgrm_jax import train as train_lib
from diffgrm_jax import train_step as step_lib

def define_flags():
  """The CLI's flags; defined only when run as a program."""
  config_flags.DEFINE_config_file(
      "config", None, "Config file the workdir was trained with; --config.<field>=... overrides.",
      lock_config=True)
  flags.DEFINE_string("workdir", None, "Training workdir holding best/ (and checkpoints/).")
  flags.DEFINE_enum("split", "test", ["test", "valid"], "Which split to evaluate.")
  flags.DEFINE_integer("beam", None, "Beam width (default: decode.test_beam for test, "
                       "decode.valid_beam for valid).")
  flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to restore.")
  flags.mark_flags_as_required(["config", "workdir"])


def evaluate_workdir(config, workdir, split="test", beam=None, which="best", progress=True):
  """Restores a checkpoint of `workdir` and returns its metrics on `split`."""
  config_checks.check_config(config)
  # Read-only: evaluation neither creates folders nor deletes a run's unfinished saves.
  ckpt = checkpointing.Checkpoints(workdir, checkpointing.model_fingerprint(config), create=False)
  try:
    mgr = ckpt.best if which == "best" else ckpt.latest
    if mgr.latest_step() is None:  # before data preparation, which may take minutes
      raise checkpointing.CheckpointError(
          f"no {which} checkpoint in {os.path.abspath(workdir)}; train first "
          f"(python -m diffgrm_jax.train --config=... --workdir={workdir})")
    exp = train_lib.Experiment(config)
    # Only the parameter shapes matter for a restore; the step count is irrelevant.
    tx, _ = step_lib.make_optimizer(config, 1)
    abstract, _ = step_lib.abstract_state(exp.model, tx, config, exp.mesh)
    state, meta = (ckpt.restore_best(abstract) if which == "best"
                   else ckpt.restore_latest(abstract))
  finally:
    ckpt.close()
  if beam is None:
    beam = config.decode.test_beam if split == "test" else config.decode.valid_beam
  result = exp.evaluate(state.params, split, beam, progress=progress)
  result.update(split=split, beam=beam, checkpoint=which, step=meta["step"],
                devices=f"{jax.device_count()}x {jax.devices()[0].device_kind}")
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from diffgrm_jax import distributed
  distributed.maybe_initialize()
  FLAGS = flags.FLAGS
  result = evaluate_workdir(FLAGS.config, FLAGS.workdir, FLAGS.split, FLAGS.beam, FLAGS.checkpoint)
  if jax.process_index() == 0:
    print(reporting.format_table({f"{FLAGS.split} (step {result['step']})": result}))
    path = os.path.join(FLAGS.workdir, f"eval_{FLAGS.split}.json")
    with open(path, "w") as f:
      json.dump(result, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
  define_flags()
  config_checks.run_cli(main)
