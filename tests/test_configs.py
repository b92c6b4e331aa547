"""Every config file loads, passes the config checks and builds a model of the intended size."""

import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from conftest import ROOT
from diffgrm_jax import config_checks
from diffgrm_jax import model as model_lib

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _load(path, arg=None):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_is_valid(path):
  c = _load(path)
  config_checks.check_config(c)
  m = model_lib.from_config(c)
  n = c.sid.n_digit
  shapes = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 4, n), jnp.int32),
                          jnp.ones((1, 4), bool), jnp.zeros((1, 1, n), jnp.int32),
                          jnp.zeros((1, 1, n), bool))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes))) > 0


def test_recipes_follow_the_paper():
  path = lambda name: os.path.join(ROOT, "configs", name)
  sports, beauty, toys = _load(path("sports.py")), _load(path("beauty.py")), _load(path("toys.py"))
  assert (sports.optim.lr, sports.masking.label_smoothing, sports.model.d_model) == (0.003, 0.1, 256)
  assert (beauty.optim.lr, beauty.masking.label_smoothing) == (0.01, 0.2)
  assert (toys.model.d_model, toys.model.n_heads, toys.masking.label_smoothing) == (1024, 8, 0.15)
  assert toys.train.eval_start_epoch == 10 and sports.train.eval_start_epoch == 20
  for c in (sports, beauty, toys):
    assert (c.train.batch_size, c.optim.warmup_steps, c.optim.weight_decay) == (1024, 10000, 0.0)
    assert (c.masking.strategy, c.decode.strategy, c.decode.valid_beam) == ("guided", "confidence", 32)
  cpu = _load(path("sports.py"), "cpu")
  config_checks.check_config(cpu)
  assert cpu.model.d_model == 128 and cpu.train.epochs == 2
