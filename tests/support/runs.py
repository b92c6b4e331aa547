"""Helpers for the tests that run real training commands on the tiny run config
(`support.configs.TINY_RUN`): subprocesses with their worker's compilation cache, and bitwise
comparisons of checkpoints and summaries between runs."""

import json
import os
import re
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from support.configs import ROOT, TINY_RUN, make_config
from support.shared import compile_cache_dir

STEPS_PER_EPOCH, TOTAL_STEPS = 9, 18  # of TINY_RUN
TIMEOUT = 300  # seconds for one training subprocess (about 20 s on 2 quiet cores; far more on busy ones)


def tiny_run_config(cache, **changes):
  """configs/demo.py with TINY_RUN and dotted-field `changes`, caching data in `cache`."""
  return make_config("demo.py", **dict(TINY_RUN, **changes, **{"data.cache_dir": cache}))


def flags(overrides):
  return [f"--config.{k}={'(' + ','.join(map(str, v)) + ',)' if isinstance(v, tuple) else v}"
          for k, v in overrides.items()]


def cli_command(verb, cache, workdir=None, **changes):
  """`python -m diffgrm_jax.<verb>` on configs/demo.py with TINY_RUN and `changes`
  (`a__b=v` for --config.a.b=v), caching data in `cache`."""
  overrides = dict(TINY_RUN, **{k.replace("__", "."): v for k, v in changes.items()},
                   **{"data.cache_dir": cache})
  return ([sys.executable, "-m", f"diffgrm_jax.{verb}", "--config=configs/demo.py"]
          + ([f"--workdir={workdir}"] if workdir else []) + flags(overrides))


def subprocess_env():
  # This worker's compilation cache (conftest.py): a rerun loads the executables the first
  # run compiled (the same code, so results stay bitwise equal) instead of spending most
  # of its time compiling.
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=compile_cache_dir(),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env.pop("XLA_FLAGS", None)  # one CPU device, whatever the test process uses
  return env


def tail(text, n=30):
  lines = [l for l in (text or "").splitlines() if not re.match(r"^[IW]\d{4} ", l)]
  return "\n".join(lines[-n:])


def run_command(cmd, timeout=TIMEOUT):
  try:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=subprocess_env())
  except subprocess.TimeoutExpired as e:
    err = e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr
    pytest.fail(f"{' '.join(cmd[:3])} timed out after {timeout} s; stderr tail:\n{tail(err)}")


def ok(proc):
  assert proc.returncode == 0, f"exit code {proc.returncode}; stderr tail:\n{tail(proc.stderr)}"
  return proc


class Child:
  """A training subprocess writing to files (a full pipe would block it)."""

  def __init__(self, cmd, folder):
    self.out, self.err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
    with open(self.out, "w") as o, open(self.err, "w") as e:
      self.proc = subprocess.Popen(cmd, stdout=o, stderr=e, text=True, cwd=ROOT, env=subprocess_env())

  def text(self, which="err"):
    with open(self.err if which == "err" else self.out) as f:
      return f.read()

  def wait_for_checkpoint(self, workdir, timeout=TIMEOUT, finished=None):
    """Polls until the first finished checkpoint exists; returns its step. `finished()`
    lists the finished steps (default: the step folders of a local workdir)."""
    finished = finished or (lambda: saved_steps(os.path.join(workdir, "checkpoints")))
    deadline = time.time() + timeout
    while time.time() < deadline:
      steps = finished()
      if steps:
        return steps[0]
      if self.proc.poll() is not None:
        pytest.fail(f"training exited ({self.proc.returncode}) before its first checkpoint:\n"
                    f"{tail(self.text())}")
      time.sleep(0.02)
    self.proc.kill()
    pytest.fail(f"no checkpoint after {timeout} s:\n{tail(self.text())}")

  def wait(self, timeout=60):
    try:
      return self.proc.wait(timeout)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      pytest.fail(f"training did not exit within {timeout} s:\n{tail(self.text())}")


def saved_steps(folder):
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def checkpoint(path):
  """(leaves of the saved TrainState as numpy, meta dict) of one step folder."""
  ckptr = ocp.StandardCheckpointer()
  # Onto this process's first device, whatever devices the training command had.
  here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
                        ckptr.metadata(os.path.join(path, "state")).item_metadata)
  state = ckptr.restore(os.path.join(path, "state"), target)
  with open(os.path.join(path, "meta", "metadata")) as f:
    meta = json.load(f)
  return [np.asarray(x) for x in jax.tree.leaves(state)], meta


def assert_same_run(ref, other, latest=None):
  """Same summary (but times) and bitwise-equal latest and best checkpoints; `latest`: the
  latest steps to compare when the runs saved at different steps."""
  summaries = []
  for wd in (ref, other):
    with open(os.path.join(wd, "summary.json")) as f:
      summaries.append({k: v for k, v in json.load(f).items()
                        if k not in ("wall_time_s", "timing")})
  assert summaries[0] == summaries[1]
  for sub in ("checkpoints", "best"):
    steps = saved_steps(os.path.join(ref, sub))
    if sub == "checkpoints" and latest is not None:
      assert set(latest) <= set(steps) and set(latest) <= set(saved_steps(os.path.join(other, sub)))
      steps = latest
    else:
      assert saved_steps(os.path.join(other, sub)) == steps, sub
    for s in steps:
      (a, meta_a), (b, meta_b) = (checkpoint(os.path.join(wd, sub, str(s))) for wd in (ref, other))
      assert meta_a == meta_b, f"{sub}/{s} meta differs"
      assert len(a) == len(b)
      for x, y in zip(a, b):
        assert x.dtype == y.dtype and np.array_equal(x, y), f"{sub}/{s}: state differs"


def damage_files(path):
  """Overwrites every file under `path` with garbage of a third of its size."""
  for root, _, files in os.walk(path):
    for name in files:
      p = os.path.join(root, name)
      size = os.path.getsize(p)
      with open(p, "wb") as f:
        f.write(b"\x00garbage" * max(1, size // 24))
