"""`train.steps_per_call`: K steps in one jitted call give the parameters of one step per
call, bitwise on CPU, for the SID model and SASRec, and start-up compilation covers the
K-step programs. (A K-step run killed with SIGKILL and rerun: test_training_loop.py.)"""

import os

import numpy as np

from support.compile_log import OWNED, split_at_precompile
from support.runs import assert_same_run, checkpoint, saved_steps, tiny_run_config
from diffgrm_jax.training import loop as trainer


def _final_state(wd):
  steps = saved_steps(os.path.join(wd, "checkpoints"))
  return steps[-1], checkpoint(os.path.join(wd, "checkpoints", str(steps[-1])))[0]


def test_eight_steps_per_call_end_as_the_reference_run(reference_run, run_cache, run_data,
                                                        tmp_path, caplog, monkeypatch):
  # No mid-epoch saves, so a 9-step epoch is a call of 8 steps and one of 1 (one program
  # per step: the K-step program fuses gradients and update); the session's reference run
  # took one step per call with the CPU's two programs per step and saved every 4 steps.
  wd = str(tmp_path / "k8")
  config = tiny_run_config(run_cache, **{"train.steps_per_call": 8,
                                         "train.checkpoint_every_steps": 0})
  with split_at_precompile(caplog, monkeypatch) as marks:
    summary = trainer.train_and_evaluate(config, wd, data=run_data, progress=False)
  assert summary["steps"] == 18
  assert_same_run(reference_run, wd, latest=[18])
  # Start-up compiled the 8-step call and the 1-step one that ends each epoch, and neither
  # (nor a decoder) was compiled again in the run.
  assert any(j.startswith("8 steps per call") for j in marks["jobs"]), marks["jobs"]
  assert not [n for n in marks["later"] if n in OWNED], marks["later"]


def test_eight_steps_per_call_give_sasrecs_parameters_of_one(run_cache, run_data, tmp_path):
  # SASRec's one-row-per-user epochs are 4 steps: one call each.
  changes = {"model.kind": "sasrec", "train.step_programs": 1,
             "train.checkpoint_every_steps": 0}
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
