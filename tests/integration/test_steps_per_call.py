"""`train.steps_per_call`: K steps in one jitted call give the parameters of one step per
call, bitwise on CPU, for the SID model and SASRec; a K-step run killed with SIGKILL and
rerun ends bitwise equal to an uninterrupted K-step run."""

import os
import re
import signal

import numpy as np
import pytest

from support.runs import (TOTAL_STEPS, Child, assert_same_run, checkpoint, cli_command, ok,
                          run_command, saved_steps, tail, tiny_run_config)
from diffgrm_jax.training import loop as trainer


def _final_state(wd):
  steps = saved_steps(os.path.join(wd, "checkpoints"))
  return steps[-1], checkpoint(os.path.join(wd, "checkpoints", str(steps[-1])))[0]


@pytest.mark.parametrize("kind", ["diffgrm", "sasrec"])
def test_eight_steps_per_call_give_the_parameters_of_one(run_cache, run_data, tmp_path, kind):
  # One program per step in both (the one-step reference fuses gradients and update too),
  # no mid-epoch saves: a 9-step epoch is a call of 8 steps and one of 1 (SASRec's
  # one-row-per-user epochs are 4 steps: one call each).
  changes = {"model.kind": kind, "train.step_programs": 1, "train.checkpoint_every_steps": 0}
  runs = {}
  for k in (1, 8):
    wd = str(tmp_path / f"k{k}")
    config = tiny_run_config(run_cache, **changes, **{"train.steps_per_call": k})
    runs[k] = trainer.train_and_evaluate(config, wd, data=run_data, progress=False), wd
  (s1, wd1), (s8, wd8) = runs[1], runs[8]
  assert s1["history"] == s8["history"] and s1["test"] == s8["test"]
  (step1, a), (step8, b) = _final_state(wd1), _final_state(wd8)
  assert step1 == step8 == s1["steps"] >= 8  # two calls or more
  for x, y in zip(a, b):
    assert x.dtype == y.dtype and np.array_equal(x, y)


def test_sigkill_then_rerun_with_steps_per_call_ends_bitwise_equal(run_cache, tmp_path):
  ref = str(tmp_path / "ref")
  ok(run_command(cli_command("train", run_cache, ref, train__steps_per_call=8)))
  wd = str(tmp_path / "run")
  child = Child(cli_command("train", run_cache, wd, train__steps_per_call=8), str(tmp_path))
  first = child.wait_for_checkpoint(wd)
  child.proc.send_signal(signal.SIGKILL)
  child.wait()
  assert first < TOTAL_STEPS and not os.path.exists(os.path.join(wd, "summary.json"))
  rerun = ok(run_command(cli_command("train", run_cache, wd, train__steps_per_call=8)))
  resumed = re.search(r"resumed from step (\d+)", rerun.stdout)
  assert resumed and 0 < int(resumed.group(1)) < TOTAL_STEPS, tail(rerun.stdout)
  assert_same_run(ref, wd)
