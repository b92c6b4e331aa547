"""Mesh and rules: shape parsing, FSDP really shards parameters and Adam moments, the data
axis splits the Adam moments too, the optional tensor axis trains like 1 device, and no
involuntary rematerialisation."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from support.configs import ROOT
from diffgrm_jax.runtime import cli
from diffgrm_jax.runtime import sharding as shard_lib


def test_mesh_shape_pads_and_resolves():
  assert shard_lib.mesh_shape((4, 2), 8, 3) == (4, 2, 1)
  assert shard_lib.mesh_shape((-1,), 8, 3) == (8, 1, 1)
  assert shard_lib.mesh_shape((2, -1, 2), 8, 3) == (2, 2, 2)
  with pytest.raises(cli.ConfigError, match="at most one axis may be -1"):
    shard_lib.mesh_shape((-1, -1), 8, 3)
  with pytest.raises(cli.ConfigError, match="needs 6 devices but 8"):
    shard_lib.mesh_shape((3, 2), 8, 3)
  with pytest.raises(cli.ConfigError, match="more entries than mesh.axes"):
    shard_lib.mesh_shape((1, 1, 1, 8), 8, 3)


def test_rule_naming_a_missing_axis_fails(config):
  config.mesh.shape, config.mesh.axes = (-1, 1), ("data", "fsdp")  # rules still name tensor
  with pytest.raises(cli.ConfigError, match="'mlp' to mesh axis 'tensor'"):
    shard_lib.make_mesh(config)


_EIGHT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import jax
import numpy as np
from support.configs import tiny_config
from support.tiny import train_random_steps
from diffgrm_jax.model import factory as model_lib
from diffgrm_jax.runtime import sharding as shard_lib
from diffgrm_jax.training import step as step_lib

def small_config(shape):
  # A smaller graph compiles faster; sharding behaves the same.
  return tiny_config(**{"mesh.shape": shape, "model.n_dec_layers": 1,
                        "masking.strategy": "random"})

def losses(c, devices, n_steps=2):
  return train_random_steps(c, shard_lib.make_mesh(c, devices), n_steps)[0]

spec = lambda s: [list(a) if isinstance(a, tuple) else a for a in s.spec]
out = {"single": losses(small_config((1,)), jax.devices()[:1]), "losses": {}, "specs": {}}
for shape in [(1, 8), (2, 4), (2, 2, 2)]:
  c = small_config(shape)
  mesh = shard_lib.make_mesh(c)
  tx, _ = step_lib.make_optimizer(c, 10)
  abstract, shardings = step_lib.abstract_state(model_lib.from_config(c), tx, c, mesh)
  adam = shardings.opt_state[1][0]  # chain(clip, adamw) -> adamw's ScaleByAdamState
  out["specs"][str(shape)] = {
      "bytes": [shard_lib.bytes_per_device(abstract.params, shardings.params),
                shard_lib.bytes_per_device(abstract.opt_state, shardings.opt_state)],
      "kernel": spec(shardings.params["dec_0"]["mlp"]["wi"]["kernel"]),
      "mu": spec(adam.mu["dec_0"]["mlp"]["wi"]["kernel"]),
      "nu": spec(adam.nu["dec_0"]["mlp"]["wi"]["kernel"]),
      "table": spec(shardings.params["token_embedding"]),
      "table_mu": spec(adam.mu["token_embedding"]),
  }
  if shape == (2, 2, 2):  # data and fsdp without tensor train in test_train_step.py
    out["losses"][str(shape)] = losses(c, jax.devices())
print("JSON" + json.dumps(out))
"""


def test_fsdp_and_tensor_axes_on_eight_fake_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="0")
  res = subprocess.run([sys.executable, "-c", _EIGHT, os.path.join(ROOT, "tests")], env=env,
                       capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  # XLA logs "[SPMD] Involuntary full rematerialization" when a sharding cannot be
  # converted without gathering everything (e.g. a badly sharded embedding lookup).
  assert "rematerializ" not in res.stderr.lower(), res.stderr[-3000:]
  out = json.loads(res.stdout.split("JSON", 1)[1])
  assert out["single"][0] != out["single"][1]  # the step really updated something
  assert list(out["losses"]) == ["(2, 2, 2)"]
  for shape, losses in out["losses"].items():
    np.testing.assert_allclose(losses, out["single"], rtol=2e-5, err_msg=shape)

  specs = out["specs"]
  # 'embed' -> fsdp: the MLP kernel [embed, mlp] and the table [vocab, embed] are split over
  # fsdp; with a tensor axis the kernel's mlp dim is split too.
  for shape, s in specs.items():
    assert s["kernel"] == ["fsdp", "tensor"] and s["table"] == [None, "fsdp"]
    if shape == "(1, 8)":  # no data axis: Adam's moments are laid out as the parameters
      assert s["mu"] == s["nu"] == s["kernel"] and s["table_mu"] == s["table"]
    else:  # ... and also split over the data axis (ZeRO), on the first dimension that divides
      assert s["mu"] == s["nu"] == [["fsdp", "data"], "tensor"]
      assert s["table_mu"] == ["data", "fsdp"]
  # Parameters per device shrink with the fsdp size (1x8 holds ~1/8); the optimizer state
  # with fsdp x data.
  p18, o18 = specs["(1, 8)"]["bytes"]
  p24, o24 = specs["(2, 4)"]["bytes"]
  assert p18 < p24 < 0.3 * p18 * 8
  assert 1.9 < o18 / p18 < 2.2  # Adam's two moments (+ the step count)
  assert 0.9 < o24 / p24 < 1.1  # the same, split over data = 2 as well
