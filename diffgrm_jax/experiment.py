"""Everything built from a config that training, evaluation and the experiment scripts share.

  exp = Experiment(config)            # checks the config, builds the mesh (fails fast)
  exp.data, exp.catalogue             # prepared on first use (may take minutes)
  exp.evaluate(params, "valid")       # decodes a split with the split's SearchSettings
  exp.validate(params)                # its SID-level metrics on the device (training)

SASRec (`model.kind='sasrec'`) scores every item instead of decoding SIDs: `evaluate` and
`validate` then rank all items on the device (`evaluation/item_scores.py`), and its model
is built once the data (its item count) is prepared.

`evaluate_workdir` restores a workdir's best (or latest) checkpoint onto the devices present
now and evaluates it: what `python -m diffgrm_jax.eval` runs. `from_workdir` builds the
experiment from a workdir's own config and data (workdir.py). See docs/design.md.
"""

import functools

import jax
import numpy as np

from diffgrm_jax import config_checks
from diffgrm_jax import data as data_lib
from diffgrm_jax import workdir as workdir_lib
from diffgrm_jax.decoding import settings as decode_settings
from diffgrm_jax.evaluation import evaluate as evaluation
from diffgrm_jax.evaluation import item_scores
from diffgrm_jax.evaluation import metrics as metrics_lib
from diffgrm_jax.model import factory as model_lib
from diffgrm_jax.runtime import compile_cache
from diffgrm_jax.runtime import paths
from diffgrm_jax.runtime import sharding as shard_lib
from diffgrm_jax.sid import catalogue as catalogue_lib
from diffgrm_jax.sid import ranking
from diffgrm_jax.training import checkpointing
from diffgrm_jax.training import step as step_lib


class Experiment:
  """Config -> mesh, model, data, catalogue; checkpoints, abstract state and evaluation.

  The config is checked, the persistent compilation cache turned on
  (`train.compilation_cache`), and the mesh built and checked against the devices, at
  construction (they fail in a second); the data is prepared on first use of `data`
  (it may take minutes), so a caller can check a workdir's checkpoints before that.
  `data` may be given (already prepared, e.g. loaded from a file).
  """

  def __init__(self, config, data=None, devices=None):
    config_checks.check_config(config)
    self.config = config
    compile_cache.enable(config)  # before anything compiles
    self.mesh = shard_lib.make_mesh(config, devices)
    self.batch_sharding = shard_lib.batch_sharding(config, self.mesh)
    config_checks.check_against_devices(
        config, shard_lib.data_parallel_size(config, self.mesh), jax.process_count())
    if not model_lib.scores_items(config):
      self.model = model_lib.from_config(config)  # else built from the data (property below)
    if data is not None:  # replaces the lazy property below
      config_checks.check_against_data(config, data)
      self.data = data

  @functools.cached_property
  def model(self):
    # Only the kinds that score item ids get here: they are built for the data's item count.
    return model_lib.from_config(self.config, n_items=self.data.n_items)

  @property
  def scores_items(self):
    """Whether the model ranks item ids itself (SASRec) instead of writing SIDs."""
    return model_lib.scores_items(self.config)

  @functools.cached_property
  def data(self):
    data = data_lib.prepare_data(self.config, verbose=jax.process_index() == 0)
    config_checks.check_against_data(self.config, data)
    return data

  @functools.cached_property
  def catalogue(self):
    return catalogue_lib.Catalogue.from_sids(
        self.data.sids, self.config.sid.codebook_size,
        item_popularity=self.data.item_train_counts)

  @functools.cached_property
  def sid_hash(self):
    return data_lib.sid_hash(self.data.sids)

  def item_log_prior(self, alpha):
    """log P(item | SID) over the catalogue from training counts (`ranking.item_log_prior`)."""
    key = float(alpha)
    cache = self.__dict__.setdefault("_log_priors", {})
    if key not in cache:
      cache[key] = ranking.item_log_prior(self.catalogue, self.data.item_train_counts, key)
    return cache[key]

  def checkpoints(self, workdir, create=True):
    """The workdir's checkpoint managers, tied to this config's model fingerprint (and to
    the SID table once the data is prepared: `ckpt.sid_hash = exp.sid_hash`); a training
    run's (`create`) latest saves are asynchronous with `train.async_checkpoints`."""
    return checkpointing.Checkpoints(
        workdir, checkpointing.model_fingerprint(self.config), create=create,
        async_save=create and bool(self.config.train.async_checkpoints))

  def abstract_state(self, tx=None):
    """(abstract train state, shardings) to restore into; `tx` defaults to an optimiser
    whose schedule length does not matter (only the parameter shapes do)."""
    if tx is None:
      tx, _ = step_lib.make_optimizer(self.config, 1)
    return step_lib.abstract_state(self.model, tx, self.config, self.mesh)

  def search_settings(self, split, beam=None):
    """The split's `SearchSettings` (`beam` instead of the split's beam when given)."""
    return decode_settings.SearchSettings.from_config(self.config, split, beam)

  @functools.cached_property
  def ranking_settings(self):
    return decode_settings.RankingSettings.from_config(self.config)

  def evaluate(self, params, split, search=None, progress=True, keep_items=False):
    """Metrics of `params` on `split`, decoded with `search` (default: the split's);
    `keep_items` adds the ranked item lists (`evaluation.evaluate`)."""
    search = search or self.search_settings(split)
    ranking_settings = self.ranking_settings
    batches = data_lib.eval_batches(self.data, split, batch_size=search.batch_size,
                                    buckets=tuple(self.config.data.length_buckets))
    if self.scores_items:
      return item_scores.evaluate(
          {"params": params}, self.model, self.catalogue, batches,
          exclude_history=self.config.decode.exclude_history, mesh=self.mesh,
          batch_sharding=self.batch_sharding, keep_items=keep_items,
          progress=progress and jax.process_index() == 0)
    return evaluation.evaluate(
        {"params": params}, self.model, self.catalogue, batches, search, ranking_settings,
        log_prior=self.item_log_prior(ranking_settings.item_prior_alpha), mesh=self.mesh,
        batch_sharding=self.batch_sharding, progress=progress and jax.process_index() == 0,
        keep_items=keep_items)

  def validate(self, params, search=None):
    """The validation split's SID-level metrics (what model selection reads), computed on
    the device (`evaluation.validate`); its batches are uploaded once per experiment."""
    search = search or self.search_settings("valid")
    if self.scores_items:  # exact ranks on the device, both levels (item_scores.py)
      return self.evaluate(params, "valid", search, progress=False)
    cache = self.__dict__.setdefault("_valid_batches", {})
    if search.batch_size not in cache:
      batches = data_lib.eval_batches(self.data, "valid", batch_size=search.batch_size,
                                      buckets=tuple(self.config.data.length_buckets))
      put = lambda x, dtype: jax.make_array_from_process_local_data(
          self.batch_sharding, np.asarray(x, dtype))
      cache[search.batch_size] = [
          (put(b["hist_sids"], np.int32), put(b["hist_mask"], bool),
           put(b["target_sid"], np.int32), put(b["weight"], np.float32)) for b in batches]
    return evaluation.validate({"params": params}, self.model, self.catalogue,
                               cache[search.batch_size], search, mesh=self.mesh)

  def popularity(self, split):
    s = getattr(self.data, split)
    return metrics_lib.popularity_baseline(self.data.item_train_counts, self.data.sids, s.target)


def restore(exp, workdir, which="best"):
  """(state, meta) of the `which` ('best' or 'latest') checkpoint of `workdir`, read-only.

  Fails with a one-line `CheckpointError` when there is none, before any data preparation.
  """
  # Read-only: evaluation neither creates folders nor deletes a run's unfinished saves.
  ckpt = exp.checkpoints(workdir, create=False)
  try:
    mgr = ckpt.best if which == "best" else ckpt.latest
    if mgr.latest_step() is None:
      hint = ("; no validation ran, try --checkpoint=latest"
              if which == "best" and ckpt.latest.latest_step() is not None else
              f"; train first (python -m diffgrm_jax.train --config=... --workdir={workdir})")
      raise checkpointing.CheckpointError(
          f"no {which} checkpoint in {paths.absolute(workdir)}{hint}")
    # The model fingerprint first (before any data preparation), then the SID table.
    ckpt.check_best() if which == "best" else ckpt.check_latest()
    ckpt.sid_hash = exp.sid_hash
    abstract, _ = exp.abstract_state()
    return ckpt.restore_best(abstract) if which == "best" else ckpt.restore_latest(abstract)
  finally:
    ckpt.close()


def from_workdir(workdir, config=None, devices=None):
  """The experiment of a workdir: its config.json and data/ (`config`, when given, must agree
  on the model and SID fields); a workdir from before those files needs `config`, and its
  data is prepared from it."""
  config = workdir_lib.load_config(workdir, config)
  return Experiment(config, data=workdir_lib.load_data(workdir, config), devices=devices)


def evaluate_workdir(config, workdir, split="test", beam=None, which="best", progress=True):
  """Restores a checkpoint of `workdir` and returns its metrics on `split` (with `beam`
  instead of the split's beam when given). `config` may be None (the workdir's own)."""
  exp = from_workdir(workdir, config)
  config = exp.config
  state, meta = restore(exp, workdir, which)
  result = exp.evaluate(state.params, split, exp.search_settings(split, beam), progress=progress)
  result.update(split=split, beam=decode_settings.split_beam(config.decode, split, beam),
                checkpoint=which, step=meta["step"],
                devices=f"{jax.device_count()}x {jax.devices()[0].device_kind}")
  return result
