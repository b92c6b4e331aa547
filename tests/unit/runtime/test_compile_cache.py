"""The persistent compilation cache: on by default under the data cache folder, a second
process loads what the first compiled (no compile time), off by config, and a folder the
user chose is left alone."""

import json
import os
import subprocess
import sys

from support.configs import ROOT

_CHILD = r"""
import json, sys
sys.path[:0] = [sys.argv[1]]
import jax, jax.numpy as jnp
from support.configs import make_config
from diffgrm_jax.runtime import compile_cache
config = make_config(**{"data.cache_dir": sys.argv[2], "train.compilation_cache": sys.argv[3] == "on"})
folder = compile_cache.enable(config)
def f(x):  # a program whose compilation takes a while
  for i in range(60):
    x = jnp.tanh(x @ x.T + i)
  return x.sum()
f = jax.jit(f)
print("JSON" + json.dumps([folder, float(f(jnp.ones((64, 64)))), compile_cache.compile_seconds()]))
"""


def _run(cache, switch="on", **env):
  base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  base.update(JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **env)
  res = subprocess.run([sys.executable, "-c", _CHILD, os.path.join(ROOT, "tests"), str(cache),
                        switch], env=base, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  return json.loads(res.stdout.split("JSON", 1)[1])


def test_second_process_loads_what_the_first_compiled(tmp_path):
  folder, value, first = _run(tmp_path)
  assert folder == os.path.join(str(tmp_path), "xla") and os.listdir(folder)
  assert first > 0.05  # it compiled
  folder2, value2, second = _run(tmp_path)
  # Loaded, not compiled again (a few milliseconds remain for JAX's own small programs).
  assert (folder2, value2) == (folder, value) and second < first / 5, (first, second)


def test_off_by_config_and_a_chosen_folder_stays(tmp_path):
  assert _run(tmp_path / "a", "off")[0] is None
  assert not os.path.exists(tmp_path / "a" / "xla")
  mine = str(tmp_path / "mine")
  assert _run(tmp_path / "b", JAX_COMPILATION_CACHE_DIR=mine)[0] is None
  assert os.listdir(mine) and not os.path.exists(tmp_path / "b" / "xla")
