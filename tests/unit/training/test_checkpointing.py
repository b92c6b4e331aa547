"""Checkpoint files: a half-written save leaves the previous one restorable, a damaged one
is a one-line CheckpointError, evaluation creates nothing, a best saved twice is kept."""

import os
import re
import shutil

import jax
import numpy as np
import pytest

from support.runs import damage_files, saved_steps, tiny_run_config


def abstract_state(run_cache, run_data, **changes):
  from diffgrm_jax import experiment
  config = tiny_run_config(run_cache, **changes)
  return config, experiment.Experiment(config, run_data).abstract_state()[0]


def test_half_written_save_leaves_previous_checkpoint_restorable(reference_run, run_cache, run_data, tmp_path):
  from diffgrm_jax.training import checkpointing
  wd = str(tmp_path / "wd")
  shutil.copytree(reference_run, wd)
  # What a kill during the save of step 19 leaves: orbax's temporary folder, half written.
  half = os.path.join(wd, "checkpoints", "19.orbax-checkpoint-tmp-1700000000")
  shutil.copytree(os.path.join(wd, "checkpoints", "18"), half)
  for name in ("manifest.ocdbt", "_METADATA"):
    with open(os.path.join(half, "state", name), "r+b") as f:
      f.truncate(5)
  os.remove(os.path.join(half, "meta", "metadata"))

  config, abstract = abstract_state(run_cache, run_data)
  restored = []
  for folder in (wd, reference_run):
    ckpt = checkpointing.Checkpoints(folder, checkpointing.model_fingerprint(config))
    restored.append(ckpt.restore_latest(abstract))
    ckpt.close()
  (state, meta), (ref_state, _) = restored
  assert meta["step"] == 18 and int(state.step) == 18
  for x, y in zip(jax.tree.leaves(ref_state), jax.tree.leaves(state)):
    assert np.array_equal(np.asarray(x), np.asarray(y))
  assert not os.path.exists(half)  # cleaned up when the training run opens the workdir


@pytest.mark.parametrize("damage", ["garbage_state", "garbage_meta", "empty_step_folder"])
def test_damaged_checkpoint_is_a_one_line_checkpoint_error(reference_run, run_cache, run_data, tmp_path,
                                                           damage):
  from diffgrm_jax.training import checkpointing
  wd = str(tmp_path / "wd")
  shutil.copytree(reference_run, wd)
  if damage == "empty_step_folder":  # e.g. a copy that stopped before any file
    bad, previous = os.path.join(wd, "checkpoints", "20"), 18
    os.makedirs(bad)
  else:
    bad, previous = os.path.join(wd, "checkpoints", "18"), 16
    damage_files(os.path.join(bad, "state" if damage == "garbage_state" else "meta"))
  config, abstract = abstract_state(run_cache, run_data)
  ckpt = checkpointing.Checkpoints(wd, checkpointing.model_fingerprint(config))
  with pytest.raises(checkpointing.CheckpointError) as e:
    ckpt.restore_latest(abstract)
  ckpt.close()
  msg = str(e.value)
  assert "\n" not in msg
  assert re.fullmatch(rf"checkpoint {re.escape(bad)} is unreadable \(.+\); delete "
                      rf"{re.escape(bad)} to resume from step {previous}", msg), msg


def test_eval_of_a_missing_workdir_creates_nothing(tmp_path):
  from diffgrm_jax.training import checkpointing
  with pytest.raises(checkpointing.CheckpointError,
                     match=rf"workdir {re.escape(str(tmp_path / 'nowhere'))} does not exist"):
    checkpointing.Checkpoints(str(tmp_path / "nowhere"), "x", create=False)
  assert not os.path.exists(tmp_path / "nowhere")


def test_best_saved_again_at_the_same_step_is_kept(tmp_path):
  """A run killed between its best and latest saves repeats that best save on resume."""
  import jax.numpy as jnp
  from diffgrm_jax.training import checkpointing
  ckpt = checkpointing.Checkpoints(str(tmp_path), "fp")
  ckpt.save_best(9, {"w": jnp.ones(3)}, {"step": 9})
  ckpt.save_best(9, {"w": jnp.ones(3)}, {"step": 9})  # orbax alone: StepAlreadyExistsError
  ckpt.close()
  assert saved_steps(str(tmp_path / "best")) == [9]



def test_fingerprint_of_workdirs_from_before_a_later_off_by_default_field():
  """A config saved before `model.sasrec_padding_keys` existed fingerprints as one with the
  field off (its behaviour then), and differently from one with it on."""
  import copy  # pylint: disable=g-import-not-at-top
  from configs import sasrec  # pylint: disable=g-import-not-at-top
  from diffgrm_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  new = sasrec.get_config("demo")
  old = copy.deepcopy(new)
  with old.unlocked():
    del old.model["sasrec_padding_keys"]
  assert checkpointing.model_fingerprint(old) == checkpointing.model_fingerprint(new)
  new.model.sasrec_padding_keys = True
  assert checkpointing.model_fingerprint(old) != checkpointing.model_fingerprint(new)
