"""Shared fixtures and the one builder of small test configs (`make_config`).

`make_config(base, **changes)` starts from a config file in configs/ (or the defaults) and
applies dotted-field changes, e.g. `make_config("demo.py", **TINY_RUN)`. The named change
sets below are the sizes the tests use:
  TINY_MODEL  a small model on the default data settings (unit tests of steps/sharding);
  TINY_RUN    a complete run of configs/demo.py in seconds: 100 users, 60 items, codebook 8,
              d_model 16, 9 steps per epoch, 2 epochs, validation after each.
"""

import copy
import importlib.util
import json
import os

import numpy as np
import pytest

from diffgrm_jax import defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_MODEL = {
    "sid.codebook_size": 16, "model.d_model": 32, "model.n_heads": 2, "model.n_inner": 64,
    "model.n_dec_layers": 2, "data.max_history_len": 12, "optim.warmup_steps": 2,
    "train.batch_size": 16,
}

TINY_RUN = {
    "data.synthetic.n_users": 100, "data.synthetic.n_items": 60, "data.synthetic.n_groups": 6,
    "data.synthetic.emb_dim": 16, "data.synthetic.max_len": 8, "data.max_history_len": 8,
    "data.length_buckets": (8,), "sid.codebook_size": 8, "sid.pca_dim": 8,
    "model.d_model": 16, "model.n_heads": 1, "model.n_inner": 32, "model.n_dec_layers": 1,
    "train.batch_size": 32, "train.epochs": 2, "train.eval_start_epoch": 1,
    "train.eval_every_epochs": 1, "train.checkpoint_every_steps": 4, "optim.warmup_steps": 2,
    "decode.valid_beam": 10, "decode.test_beam": 10,
    "decode.batch_size": 32,
}


def load_config_file(name, arg=None):
  """`get_config(arg)` of configs/<name> (loaded from its path, as --config=... does)."""
  path = name if os.path.isabs(name) else os.path.join(ROOT, "configs", name)
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def make_config(base=None, **changes):
  """A config from configs/<base> (default: the defaults) with dotted-field `changes`."""
  c = defaults.get_config() if base is None else load_config_file(base)
  for key, value in changes.items():
    *path, last = key.split(".")
    node = c
    for p in path:
      node = node[p]
    node[last] = value
  return c


def tiny_config(**changes):
  return make_config(**dict(TINY_MODEL, **changes))


def random_batch(rng, batch_size=16, length=8, n_digit=4, codebook=16):
  lengths = rng.integers(1, length + 1, size=(batch_size, 1))
  return {
      "hist_sids": rng.integers(0, codebook, (batch_size, length, n_digit)).astype(np.int32),
      "hist_mask": np.arange(length)[None] < lengths,
      "target_sid": rng.integers(0, codebook, (batch_size, n_digit)).astype(np.int32),
      "target_item": np.zeros(batch_size, np.int32),
      "weight": np.ones(batch_size, np.float32),
  }


# Jitted train steps by (config, mesh): several tests run the same tiny config, and a step
# compiles once instead of once per call.
_STEPS = {}


def train_random_steps(config, mesh, n_steps=3, process_index=0, process_count=1):
  """`n_steps` train steps on seeded random global batches; returns (losses, final state).

  With several processes each feeds its contiguous slice of every global batch, so any
  mesh or process count sees the same global data.
  """
  from diffgrm_jax import model as model_lib
  from diffgrm_jax import sharding as shard_lib
  from diffgrm_jax import train_step as step_lib
  key = (json.dumps(config.to_dict(), sort_keys=True, default=str), mesh.axis_names,
         tuple(d.id for d in mesh.devices.flat), mesh.devices.shape)
  if key in _STEPS:
    model, tx, bs, step = _STEPS[key]
    state, _ = step_lib.init_state(model, tx, config, mesh)  # fresh: the step donates it
  else:
    config = copy.deepcopy(config)  # the cached step must not see a caller's later edits
    model = model_lib.from_config(config)
    tx, schedule = step_lib.make_optimizer(config, 10)
    state, shardings = step_lib.init_state(model, tx, config, mesh)
    bs = shard_lib.batch_sharding(config, mesh)
    step = step_lib.make_train_step(model, tx, schedule, config, shardings, bs)
    _STEPS[key] = (model, tx, bs, step)
  rng = np.random.default_rng(0)
  per = config.train.batch_size // process_count
  mine = slice(process_index * per, (process_index + 1) * per)
  losses = []
  for _ in range(n_steps):
    batch = random_batch(rng, batch_size=config.train.batch_size)
    state, m = step(state, step_lib.to_global({k: v[mine] for k, v in batch.items()}, bs))
    losses.append(float(m["loss"]))
  return losses, state


@pytest.fixture
def config():
  return tiny_config()


# ------------------------------------------------------------------ runs of the tiny config
# Shared by test_training_loop, test_checkpointing, test_cli and test_config_checks: the
# reference run trains once per session.

@pytest.fixture(scope="session")
def run_cache(tmp_path_factory):
  """Data cache of the tiny runs (and their shared compilation cache)."""
  import run_helpers
  run_helpers.COMPILE_CACHE["dir"] = str(tmp_path_factory.mktemp("jax_cache"))
  return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, run_cache):
  """Workdir of one uninterrupted training run of the tiny config."""
  import run_helpers as h
  wd = str(tmp_path_factory.mktemp("reference"))
  h.ok(h.run_command(h.cli_command("train", run_cache, wd)))
  assert h.saved_steps(os.path.join(wd, "checkpoints")) == [16, 18]
  return wd


@pytest.fixture(scope="session")
def run_data(run_cache, reference_run):  # after the reference run, which fills the cache
  import run_helpers
  from diffgrm_jax import data as data_lib
  return data_lib.prepare_data(run_helpers.tiny_run_config(run_cache), verbose=False)
