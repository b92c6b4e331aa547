"""Orbax checkpoints in a workdir: the latest (for resume) and the best (for eval).

Layout:
  WORKDIR/checkpoints/<step>/{state,meta}   latest two, for resume
  WORKDIR/best/<step>/{state,meta}          the best by validation score (one kept)

`state` is the sharded TrainState; `meta` is JSON: epoch, data-iterator state,
early-stopping state, validation history and a fingerprint of the model config, so a
workdir cannot silently be resumed with a different model. Orbax writes each step to
a temporary folder and renames it when complete, so a kill during a save leaves the
previous checkpoint restorable.
"""

import hashlib
import json
import os

import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint that is missing, unreadable or from a different model config."""


def model_fingerprint(config):
  """Hash of the settings that fix parameter shapes (a restore needs them equal)."""
  keys = {"model": config.model.to_dict(), "n_digit": config.sid.n_digit,
          "codebook_size": config.sid.codebook_size,
          "max_history_len": config.data.max_history_len}
  keys["model"].pop("dropout", None)
  keys["model"].pop("dtype", None)
  return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def _manager(path, max_to_keep):
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.abspath(path), options=options,
                               item_names=("state", "meta"))


class Checkpoints:
  """The two managers of a workdir."""

  def __init__(self, workdir, fingerprint):
    self.workdir = workdir
    self.fingerprint = fingerprint
    self.latest = _manager(os.path.join(workdir, "checkpoints"), 2)
    self.best = _manager(os.path.join(workdir, "best"), 1)

  def _save(self, mgr, step, state, meta):
    meta = dict(meta, fingerprint=self.fingerprint)
    mgr.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    mgr.wait_until_finished()

  def save_latest(self, step, state, meta):
    self._save(self.latest, step, state, meta)

  def save_best(self, step, state, meta):
    self._save(self.best, step, state, meta)

  def _restore(self, mgr, abstract_state, what):
    step = mgr.latest_step()
    if step is None:
      return None
    where = os.path.join(mgr.directory, str(step))
    try:
      meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many types for damaged files
      raise CheckpointError(f"{what} checkpoint {where} is unreadable: {e}") from e
    if meta.get("fingerprint") != self.fingerprint:
      raise CheckpointError(
          f"{what} checkpoint {where} was written with a different model config "
          f"(fingerprint {meta.get('fingerprint')} != {self.fingerprint}); "
          "use a fresh --workdir or the config it was trained with")
    try:
      state = mgr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))["state"]
    except Exception as e:
      raise CheckpointError(f"{what} checkpoint {where} is unreadable: {e}") from e
    return state, meta

  def restore_latest(self, abstract_state):
    """(state, meta) of the latest checkpoint, or None if there is none."""
    return self._restore(self.latest, abstract_state, "latest")

  def restore_best(self, abstract_state):
    """(state, meta) of the best checkpoint, or None if there is none."""
    return self._restore(self.best, abstract_state, "best")

  def close(self):
    self.latest.close()
    self.best.close()
