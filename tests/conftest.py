"""Shared fixtures and the one builder of small test configs (`make_config`).

`make_config(base, **changes)` starts from a config file in configs/ (or the defaults) and
applies dotted-field changes, e.g. `make_config("demo.py", **TINY_RUN)`. The named change
sets below are the sizes the tests use:
  TINY_MODEL  a small model on the default data settings (unit tests of steps/sharding);
  TINY_RUN    a complete run of configs/demo.py in seconds: 100 users, 60 items, codebook 8,
              d_model 16, 9 steps per epoch, 2 epochs, validation after each.
"""

import copy
import fcntl
import importlib.util
import json
import os
import shutil
import tempfile

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


# ------------------------------------------------------------------ the session's workers
# The suite runs in several xdist worker processes (pyproject.toml). What is costly and the
# same for all of them is made once per session, in a folder they share, under a lock.

_SHARED_ENV = "DIFFGRM_TEST_SHARED_DIR"

# Files in the order they are handed to the workers: the longest first, so that no long
# file starts last and keeps one worker busy after the other has finished (whole files go
# to one worker each: `--dist loadfile`). The rest follow in their usual order.
# Measured on a 2-core machine: 310, 150, 140, 130, 80, 75, 70 s and below.
_LONGEST_FIRST = ("test_train_step.py", "test_demo.py", "test_decoding.py",
                  "test_training_loop.py", "test_multihost.py", "test_sharding.py",
                  "test_recommend.py", "test_model.py", "test_parity.py")


def pytest_configure(config):
  # The controller (or a run without workers) makes the shared folder; the workers it
  # starts afterwards inherit its path.
  if not hasattr(config, "workerinput") and _SHARED_ENV not in os.environ:
    os.environ[_SHARED_ENV] = tempfile.mkdtemp(prefix="diffgrm-jax-tests-")
    config._diffgrm_shared_dir = os.environ[_SHARED_ENV]
  # A persistent compilation cache for each worker and the processes it starts
  # (run_helpers.subprocess_env): a program compiled once is loaded, not compiled again,
  # wherever else it recurs (e.g. the same model's init under other training options).
  # The same executable, so results are unchanged.
  import jax
  jax.config.update("jax_compilation_cache_dir", compile_cache_dir())
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
  folder = getattr(config, "_diffgrm_shared_dir", None)
  if folder:
    shutil.rmtree(folder, ignore_errors=True)
    os.environ.pop(_SHARED_ENV, None)


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept


def shared_dir():
  return os.environ[_SHARED_ENV]


def compile_cache_dir():
  # One per worker: JAX writes an entry in place, unlocked, so a worker must not read
  # what another is writing. A worker's own processes run one at a time.
  return os.path.join(shared_dir(), "jax_cache_" + os.environ.get("PYTEST_XDIST_WORKER", "main"))


def shared_once(name, make):
  """Path of `name` in the session's shared folder, made by `make(path)` by the first
  worker that asks; the others wait for it and reuse it."""
  path = os.path.join(shared_dir(), name)
  with open(path + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not os.path.exists(path + ".done"):
      shutil.rmtree(path, ignore_errors=True)  # what a failed attempt left
      os.makedirs(path)
      make(path)
      open(path + ".done", "w").close()
  return path


# ------------------------------------------------------------------ runs of the tiny config
# Shared by test_training_loop, test_checkpointing, test_cli, test_config_checks and
# test_recommend: the reference run trains once per session, whichever worker asks first.

@pytest.fixture(scope="session")
def run_cache():
  """Data cache of the tiny runs, shared by the workers (its files are written atomically)."""
  path = os.path.join(shared_dir(), "cache")
  os.makedirs(path, exist_ok=True)
  return path


@pytest.fixture(scope="session")
def reference_run(run_cache):
  """Workdir of one uninterrupted training run of the tiny config (tests copy it before
  changing anything)."""
  import run_helpers as h

  def train(wd):
    h.ok(h.run_command(h.cli_command("train", run_cache, wd)))
    assert h.saved_steps(os.path.join(wd, "checkpoints")) == [16, 18]
  return shared_once("reference", train)


@pytest.fixture(scope="session")
def run_data(run_cache, reference_run):  # after the reference run, which fills the cache
  import run_helpers
  from diffgrm_jax import data as data_lib
  return data_lib.prepare_data(run_helpers.tiny_run_config(run_cache), verbose=False)
