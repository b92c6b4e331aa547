"""One XLA device per CPU core: how many, and when the count is left alone."""

import json
import os
import subprocess
import sys

import pytest

from support.configs import ROOT, tiny_config
from diffgrm_jax.runtime import cpu_devices
from diffgrm_jax.runtime.cli import ConfigError


@pytest.mark.parametrize("changes,cores,expected", [
    ({}, 8, 1),                                                   # the default: one device
    ({"mesh.cpu_devices": 0}, 2, 2),
    ({"mesh.cpu_devices": 0}, 1, 1),
    ({"mesh.cpu_devices": 0, "train.batch_size": 16, "decode.batch_size": 32}, 8, 8),
    ({"mesh.cpu_devices": 0, "train.batch_size": 16, "decode.batch_size": 32}, 12, 8),
    ({"mesh.cpu_devices": 0, "train.batch_size": 6, "decode.batch_size": 4}, 4, 2),
    ({"mesh.cpu_devices": 3}, 2, 3),                              # asked for: as given
    ({"mesh.cpu_devices": 0, "mesh.shape": (2, 2)}, 8, 4),        # a fixed mesh's size
])
def test_device_count(changes, cores, expected):
  assert cpu_devices.device_count(tiny_config(**changes), cores) == expected


def test_negative_count_is_a_config_error():
  with pytest.raises(ConfigError, match="mesh.cpu_devices=-1"):
    cpu_devices.device_count(tiny_config(**{"mesh.cpu_devices": -1}), 2)


_SPLIT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import jax
from support.configs import tiny_config
from diffgrm_jax.runtime import cpu_devices
config = tiny_config(**{"mesh.cpu_devices": int(sys.argv[2])})
first = cpu_devices.split_host(config)
jax.devices()  # JAX starts here
again = cpu_devices.split_host(config)  # too late now: left alone
print("JSON" + json.dumps([first, again, jax.device_count()]))
"""


def _split(cpu_devices_value, **changes):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env.update(JAX_PLATFORMS="cpu", **changes)
  res = subprocess.run([sys.executable, "-c", _SPLIT, os.path.join(ROOT, "tests"),
                        str(cpu_devices_value)], env=env, capture_output=True, text=True,
                       timeout=120)
  assert res.returncode == 0, res.stderr[-3000:]
  return json.loads(res.stdout.split("JSON", 1)[1])


def test_split_host_sets_the_count_before_jax_starts():
  assert _split(3) == [3, None, 3]


def test_split_host_leaves_a_users_flag_and_multi_process_runs_alone():
  flag = "--xla_force_host_platform_device_count=5"
  assert _split(3, XLA_FLAGS=flag) == [None, None, 5]
  assert _split(3, DIFFGRM_DISTRIBUTED="auto") == [None, None, 1]
