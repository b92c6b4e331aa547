"""The training loop: exact resume after SIGKILL, SIGTERM preemption, the time limit, a best
state kept in memory until the next save, and a non-finite loss.

The subprocess tests run the real CLI on the tiny run config (support.configs.TINY_RUN: 100 users,
60 items, codebook 8, d_model 16, 18 steps) and compare every interrupted run with one
uninterrupted reference run (the `reference_run` fixture): summaries equal, checkpoints
(parameters, optimiser, step, meta) bitwise equal.
"""

import json
import os
import re
import shutil
import signal
import sys
import time

import numpy as np

from support.runs import (STEPS_PER_EPOCH, TOTAL_STEPS, Child, assert_same_run, checkpoint,
                         cli_command, ok, run_command, saved_steps, tail)


def test_sigkill_mid_epoch_then_rerun_ends_bitwise_equal(reference_run, run_cache, tmp_path):
  # Both runs take several steps per jitted call (`train.steps_per_call`, calls ending at
  # the checkpoint steps), the reference one: the kill and the resume also cross K-step
  # calls. (A SIGKILL with one step per call: test_gcs_workdir.py.)
  wd = str(tmp_path / "run")
  child = Child(cli_command("train", run_cache, wd, train__steps_per_call=8), str(tmp_path))
  first = child.wait_for_checkpoint(wd)
  child.proc.send_signal(signal.SIGKILL)
  child.wait()
  assert first == 4 and first % STEPS_PER_EPOCH  # killed in the middle of epoch 1
  assert not os.path.exists(os.path.join(wd, "summary.json"))

  rerun = ok(run_command(cli_command("train", run_cache, wd, train__steps_per_call=8)))
  resumed = re.search(r"resumed from step (\d+)", rerun.stdout)
  assert resumed and 0 < int(resumed.group(1)) < TOTAL_STEPS, tail(rerun.stdout)
  assert_same_run(reference_run, wd)


def test_sigterm_saves_exits_zero_and_rerun_resumes(reference_run, run_cache, tmp_path):
  wd = str(tmp_path / "run")
  child = Child(cli_command("train", run_cache, wd), str(tmp_path))
  child.wait_for_checkpoint(wd)
  t0 = time.time()
  child.proc.send_signal(signal.SIGTERM)
  code = child.wait(timeout=60)
  took = time.time() - t0
  out = child.text("out")
  assert code == 0, f"exit code {code}:\n{tail(child.text())}"
  saved = re.search(r"SIGTERM: saved step (\d+) in .*; rerun the same command to resume", out)
  assert saved, tail(out)
  step = int(saved.group(1))
  assert step in saved_steps(os.path.join(wd, "checkpoints")) and step < TOTAL_STEPS
  assert took < 30, f"SIGTERM took {took:.1f} s"

  # A save that was killed half-way (orbax's unfinished temporary folder of a later
  # step, with a truncated file) must be ignored and cleaned up by the rerun.
  half = os.path.join(wd, "checkpoints", f"{step + 1}.orbax-checkpoint-tmp-1700000000")
  shutil.copytree(os.path.join(wd, "checkpoints", str(step)), half)
  with open(os.path.join(half, "state", "manifest.ocdbt"), "r+b") as f:
    f.truncate(3)

  rerun = ok(run_command(cli_command("train", run_cache, wd)))
  assert f"resumed from step {step} " in rerun.stdout, tail(rerun.stdout)
  assert not os.path.exists(half)
  assert_same_run(reference_run, wd)


def test_time_limit_then_rerun_with_sparse_saves_ends_bitwise_equal(reference_run, run_cache, tmp_path):
  """train.time_limit_s stops after the first step and still tests; the rerun resumes,
  saves only every 2nd epoch (so a best found at epoch 1 waits in memory for the step-18
  save) and ends as the reference did."""
  wd = str(tmp_path / "run")
  first = ok(run_command(cli_command("train", run_cache, wd, train__time_limit_s=1e-6)))
  assert "train.time_limit_s=1e-06 reached at step 1 (epoch 0)" in first.stdout, tail(first.stdout)
  with open(os.path.join(wd, "summary.json")) as f:
    summary = json.load(f)
  assert summary["stopped_by_time_limit"] and summary["steps"] == 1
  assert summary["test"]["n_users"] == 100 and summary["history"] == []
  assert saved_steps(os.path.join(wd, "checkpoints")) == [1] and saved_steps(os.path.join(wd, "best")) == []

  rerun = ok(run_command(cli_command("train", run_cache, wd, train__checkpoint_every_steps=0,
                        train__checkpoint_every_epochs=2)))
  assert "resumed from step 1 " in rerun.stdout, tail(rerun.stdout)
  with open(os.path.join(wd, "summary.json")) as f:
    summary = json.load(f)
  assert not summary["stopped_by_time_limit"] and summary["steps"] == TOTAL_STEPS
  assert set(summary["timing"]) == {"setup_s", "train_loop_s", "valid_s", "checkpoint_s",
                                    "final_eval_s", "compile_s", "precompile_s"}
  assert summary["timing"]["compile_s"] >= 0
  assert saved_steps(os.path.join(wd, "checkpoints")) == [1, 18]
  assert_same_run(reference_run, wd, latest=[18])


# The first validation (epoch 1, step 9) scores best; later ones score lower.
_FIRST_IS_BEST_CHILD = """
import itertools, sys
sys.path[:0] = ["tests", "tests/integration"]
from support import runs as h
from diffgrm_jax.runtime import cpu_devices
from diffgrm_jax.training import loop as trainer
scores = itertools.count(0, -1)
config = h.tiny_run_config(sys.argv[1], **{
    "train.checkpoint_every_steps": 0, "train.checkpoint_every_epochs": 2})
cpu_devices.split_host(config)  # the devices the train command runs on
trainer.train_and_evaluate(config, sys.argv[2], selection_score=lambda m: float(next(scores)),
                           progress=False)
"""


def test_best_kept_in_memory_is_written_with_the_next_save(run_cache, tmp_path):
  """With saves every 2nd epoch, the epoch-1 best is written at step 18 with its own
  (step-9) state, not the state it was overwritten with since."""
  at9 = str(tmp_path / "at9")  # max_steps leaves the schedule alone: the same step-9 state
  ok(run_command(cli_command("train", run_cache, at9, train__max_steps=9, train__eval_start_epoch=99)))
  wd = str(tmp_path / "run")
  ok(run_command([sys.executable, "-c", _FIRST_IS_BEST_CHILD, run_cache, wd]))
  assert saved_steps(os.path.join(wd, "checkpoints")) == [18]
  assert saved_steps(os.path.join(wd, "best")) == [9]
  (best, best_meta), (ref, _) = (checkpoint(os.path.join(wd, "best", "9")),
                                 checkpoint(os.path.join(at9, "checkpoints", "9")))
  assert best_meta["step"] == 9 and best_meta["best_step"] == 9
  assert all(np.array_equal(x, y) for x, y in zip(best, ref)) and len(best) == len(ref)
  with open(os.path.join(wd, "summary.json")) as f:
    assert json.load(f)["best_step"] == 9


# ------------------------------------------------------------------ non-finite loss

class PoisonedLoader:
  """The real training loader of `config` over `data`, but the batch of step `BAD_STEP` has
  NaN weights."""

  def __init__(self, data, config):
    from diffgrm_jax import data as data_lib
    self._loader = data_lib.train_loader(data, batch_size=config.train.batch_size,
                                         seed=config.seed,
                                         buckets=tuple(config.data.length_buckets))
    self.steps_per_epoch = self._loader.steps_per_epoch
    self.get_state, self.set_state = self._loader.get_state, self._loader.set_state

  def __next__(self):
    b = next(self._loader)
    if b["epoch"] * self.steps_per_epoch + b["step_in_epoch"] == BAD_STEP:
      b = dict(b, weight=np.full_like(b["weight"], np.nan))
    return b


BAD_STEP = STEPS_PER_EPOCH + 2

# Run in a child to reuse the session's compilation cache (in-process it compiles again).
_NAN_CHILD = """
import sys
sys.path[:0] = ["tests", "tests/integration"]
from support import runs as h
import test_training_loop as t
from diffgrm_jax import data as data_lib
from diffgrm_jax.training import loop as trainer
config = h.tiny_run_config(sys.argv[1])
data = data_lib.prepare_data(config, verbose=False)
try:
  trainer.train_and_evaluate(config, sys.argv[2], data=data, loader=t.PoisonedLoader(data, config),
                             progress=False)
except trainer.TrainingError as e:
  print("TrainingError:", e)
"""


def test_nan_loss_stops_naming_step_and_last_good_checkpoint(reference_run, run_cache, tmp_path):
  wd = str(tmp_path / "wd")
  child = ok(run_command([sys.executable, "-c", _NAN_CHILD, run_cache, wd]))
  # Checkpoints at 4, 8, 9 (epoch end, also the best); step 11 is the poisoned one.
  last = os.path.join(wd, "checkpoints", "9")
  assert f"TrainingError: non-finite loss (nan) at step {BAD_STEP}; last good checkpoint: " \
         f"{last}; nothing after it was saved (best/ is untouched); lower optim.lr or check " \
         "the data, then rerun to resume\n" in child.stdout, tail(child.stdout + child.stderr)
  assert saved_steps(os.path.join(wd, "checkpoints")) == [8, 9]
  assert saved_steps(os.path.join(wd, "best")) == [9]
  best, _ = checkpoint(os.path.join(wd, "best", "9"))
  assert all(np.isfinite(x).all() for x in best if x.dtype.kind == "f")
