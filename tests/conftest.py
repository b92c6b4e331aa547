"""Session fixtures and hooks: the folder the xdist workers share, the reference run
trained once per session, the compilation cache, and the order files go to the workers.
The helpers the tests import live in support/ (configs, the tiny model, runs)."""

import os
import shutil
import tempfile

import pytest

from support.configs import tiny_config
from support.shared import SHARED_ENV
from support.shared import compile_cache_dir
from support.shared import shared_dir
from support.shared import shared_once


@pytest.fixture
def config():
  return tiny_config()


# ------------------------------------------------------------------ the session's workers
# The suite runs in several xdist worker processes (pyproject.toml). What is costly and the
# same for all of them is made once per session, in a folder they share, under a lock.

# Files in the order they are handed to the workers: the longest first, so that no long
# file starts last and keeps one worker busy after the other has finished (whole files go
# to one worker each: `--dist loadfile`). The rest follow in their usual order.
# Measured on a 2-core machine: 310, 150, 140, 130, 80, 75, 70 s and below.
_LONGEST_FIRST = ("test_train_step.py", "test_demo.py", "test_decoding.py", "test_precompile.py",
                  "test_steps_per_call.py",
                  "test_training_loop.py", "test_multihost.py", "test_sharding.py",
                  "test_gcs_workdir.py", "test_recommend.py", "test_parity.py", "test_diffgrm.py")


def pytest_configure(config):
  # The controller (or a run without workers) makes the shared folder; the workers it
  # starts afterwards inherit its path.
  if not hasattr(config, "workerinput") and SHARED_ENV not in os.environ:
    os.environ[SHARED_ENV] = tempfile.mkdtemp(prefix="diffgrm-jax-tests-")
    config._diffgrm_shared_dir = os.environ[SHARED_ENV]
  # A persistent compilation cache for each worker and the processes it starts
  # (support/runs.py, subprocess_env): a program compiled once is loaded, not compiled again,
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
    os.environ.pop(SHARED_ENV, None)


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept


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
  from support import runs as h

  def train(wd):
    h.ok(h.run_command(h.cli_command("train", run_cache, wd)))
    assert h.saved_steps(os.path.join(wd, "checkpoints")) == [16, 18]
  return shared_once("reference", train)


@pytest.fixture(scope="session")
def run_data(run_cache, reference_run):  # after the reference run, which fills the cache
  from support import runs
  from diffgrm_jax import data as data_lib
  return data_lib.prepare_data(runs.tiny_run_config(run_cache), verbose=False)
