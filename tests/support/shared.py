"""What the xdist workers of one session share: a folder, made by the controller, and
things made once in it under a lock (`shared_once`)."""

import fcntl
import os
import shutil

SHARED_ENV = "DIFFGRM_TEST_SHARED_DIR"


def shared_dir():
  return os.environ[SHARED_ENV]


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
