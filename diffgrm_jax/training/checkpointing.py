"""Orbax checkpoints in a workdir: the latest (for resume) and the best (for eval).

Layout:
  WORKDIR/checkpoints/<step>/{state,meta}   latest two, for resume
  WORKDIR/best/<step>/{state,meta}          the best by validation score (one kept)

`state` is the sharded TrainState; `meta` is JSON: epoch, data-iterator state,
early-stopping state, validation history, a fingerprint of the model config and the hash
of the SID table (`sid_hash`), so a workdir cannot silently be resumed, evaluated or served
with a different model or SID table (checkpoints from before the SID hash carry none and
are not checked for it). A kill during a save leaves the previous checkpoint restorable:
on local disk orbax writes each step to a temporary folder and renames it when complete,
so a half-written step stays a `<step>.orbax-checkpoint-tmp-<time>` folder; on an object
store (gs://: no rename) it writes the step's folder in place and adds `commit_success.txt`
last, so a half-written step is a folder without it. `latest_step()` ignores both and the
next training run deletes them.

Every failure to read a checkpoint is a `CheckpointError` whose one-line message names
the folder and says what to do.
"""

import hashlib
import json

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from diffgrm_jax import defaults
from diffgrm_jax.runtime import paths
from diffgrm_jax.runtime.cli import UserError

# Name part of the folder orbax writes a step to before renaming it when complete.
TMP_SUFFIX = ".orbax-checkpoint-tmp"
# The file orbax writes last into a step's folder on object stores, which have no rename.
COMMIT_FILE = "commit_success.txt"


class CheckpointError(UserError, RuntimeError):
  """A checkpoint that is missing, unreadable or from a different model config."""


def model_fingerprint(config):
  """Hash of the settings that fix parameter shapes (a restore needs them equal)."""
  keys = {"model": config.model.to_dict(), "n_digit": config.sid.n_digit,
          "codebook_size": config.sid.codebook_size,
          "max_history_len": config.data.max_history_len}
  for field in defaults.FREE_MODEL_FIELDS:
    keys["model"].pop(field, None)
  # Fingerprints from before the option lack the key: left out while False, they still match.
  if not keys["model"]["shared_final_ln"]:
    keys["model"].pop("shared_final_ln", None)
  if not keys["model"].get("sasrec_padding_keys", False):  # likewise (added later, off)
    keys["model"].pop("sasrec_padding_keys", None)
  return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def _first_line(e):
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _unfinished(path, name):
  """Whether `name` in a checkpoints folder is a save that did not finish: orbax writes a
  local save under a temporary name and renames it when complete; on an object store (no
  rename) it writes the step's folder in place and adds COMMIT_FILE last."""
  if TMP_SUFFIX in name:
    return True
  return (paths.is_remote(path) and name.isdigit()
          and not paths.exists(paths.join(path, name, COMMIT_FILE)))


def _remove_unfinished_saves(path):
  # Done here, not by orbax's cleanup_tmp_directories: that runs in a thread which
  # `close()` does not wait for, so a program ending early (e.g. on a config error)
  # crashes in it at interpreter shutdown.
  if jax.process_index() == 0:
    for name in paths.listdir(path):
      if _unfinished(path, name):
        paths.rmtree(paths.join(path, name))


def _manager(path, max_to_keep, create, async_save=False):
  if create:
    _remove_unfinished_saves(path)
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=create, enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(paths.absolute(path), options=options,
                               item_names=("state", "meta"))


class Checkpoints:
  """The two managers of a workdir.

  `create=False` (evaluation) neither creates folders nor deletes unfinished saves.
  `async_save` (`train.async_checkpoints`): a latest save returns once its copy of the
  state exists and is written to disk in the background, while training goes on; the
  next save, any restore and `close` wait for it. A best save is waited for before the
  latest save that names it starts, so a latest checkpoint never names a best that is
  not on disk. Atomicity is orbax's as before (temporary folder, then rename).
  """

  def __init__(self, workdir, fingerprint, create=True, sid_hash=None, async_save=False):
    self.workdir = workdir
    self.fingerprint = fingerprint
    # The SID table's hash (data.sid_hash): saved with each checkpoint and checked on
    # restore when both sides have one. May be set after construction (it needs the data).
    self.sid_hash = sid_hash
    if not create and not paths.isdir(workdir):
      raise CheckpointError(f"workdir {paths.absolute(workdir)} does not exist; "
                            "pass the --workdir a training run wrote")
    self.async_save = bool(async_save)
    self.latest = _manager(paths.join(workdir, "checkpoints"), 2, create, self.async_save)
    self.best = _manager(paths.join(workdir, "best"), 1, create, self.async_save)

  def _save(self, mgr, step, state, meta, wait=True):
    meta = dict(meta, fingerprint=self.fingerprint)
    if self.sid_hash:
      meta["sid_hash"] = self.sid_hash
    if self.async_save:
      # The train step donates the state it is given: the background write reads a copy.
      state = jax.tree.map(jnp.copy, state)
    mgr.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    if wait:
      mgr.wait_until_finished()

  def save_latest(self, step, state, meta):
    """Saves the latest state (in the background with `async_save`)."""
    self._save(self.latest, step, state, meta, wait=not self.async_save)

  def wait(self):
    """Returns once every save in flight is on disk."""
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def save_best(self, step, state, meta):
    """Saves the best state; a step already saved (a run killed after its best save
    repeats it on resume, bitwise the same) is kept as it is."""
    if self.best.latest_step() == int(step):
      return
    self._save(self.best, step, state, meta)

  def _unreadable(self, where, step, mgr, e):
    older = [s for s in mgr.all_steps() if s < step]
    hint = (f"delete {where} to resume from step {max(older)}" if older
            else f"delete {where} or use a fresh --workdir")
    return CheckpointError(f"checkpoint {where} is unreadable ({_first_line(e)}); {hint}")

  def _meta(self, mgr, what):
    """(step, folder, meta) of the manager's latest step, or None; checks the fingerprint."""
    mgr.wait_until_finished()  # a save in flight is the latest step
    step = mgr.latest_step()
    if step is None:
      return None
    where = paths.join(mgr.directory, str(step))
    try:
      meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
      assert isinstance(meta, dict), f"meta is {type(meta).__name__}, not a JSON object"
    except Exception as e:  # orbax raises many types for damaged files
      raise self._unreadable(where, step, mgr, e) from e
    if meta.get("fingerprint") != self.fingerprint:
      raise CheckpointError(
          f"{what} checkpoint {where} was written with a different model config "
          f"(fingerprint {meta.get('fingerprint')} != {self.fingerprint}); "
          "use a fresh --workdir or the config it was trained with")
    if self.sid_hash and meta.get("sid_hash") and meta["sid_hash"] != self.sid_hash:
      raise CheckpointError(
          f"{what} checkpoint {where} was trained with SID table {meta['sid_hash']}, but the "
          f"SID table here is {self.sid_hash}; use the data (and sid config) it was trained with")
    return step, where, meta

  def _restore(self, mgr, abstract_state, what):
    found = self._meta(mgr, what)
    if found is None:
      return None
    step, where, meta = found
    try:
      state = mgr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))["state"]
    except Exception as e:
      raise self._unreadable(where, step, mgr, e) from e
    return state, meta

  def check_latest(self):
    """Meta of the latest checkpoint (None if there is none), read before any heavy work so
    a workdir of another model fails fast."""
    found = self._meta(self.latest, "latest")
    return None if found is None else found[2]

  def check_best(self):
    """Meta of the best checkpoint (None if there is none), checked as `check_latest`."""
    found = self._meta(self.best, "best")
    return None if found is None else found[2]

  def best_step(self):
    return self.best.latest_step()

  def restore_latest(self, abstract_state):
    """(state, meta) of the latest checkpoint, or None if there is none."""
    return self._restore(self.latest, abstract_state, "latest")

  def restore_best(self, abstract_state):
    """(state, meta) of the best checkpoint, or None if there is none."""
    return self._restore(self.best, abstract_state, "best")

  def close(self):
    self.wait()  # a SIGTERM's last save finishes before the program ends
    self.latest.close()
    self.best.close()
