"""Shared fixtures: a tiny config and random batches in the pipeline's format."""

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))


def tiny_config():
  import default  # configs/default.py
  c = default.get_config()
  c.sid.codebook_size = 16
  c.model.d_model = 32
  c.model.n_heads = 2
  c.model.n_inner = 64
  c.model.n_dec_layers = 2
  c.data.max_history_len = 12
  c.optim.warmup_steps = 2
  c.train.batch_size = 16
  return c


def random_batch(rng, batch_size=16, length=8, n_digit=4, codebook=16):
  lengths = rng.integers(1, length + 1, size=(batch_size, 1))
  return {
      "hist_sids": rng.integers(0, codebook, (batch_size, length, n_digit)).astype(np.int32),
      "hist_mask": np.arange(length)[None] < lengths,
      "target_sid": rng.integers(0, codebook, (batch_size, n_digit)).astype(np.int32),
      "target_item": np.zeros(batch_size, np.int32),
      "weight": np.ones(batch_size, np.float32),
  }


def train_random_steps(config, mesh, n_steps=3, process_index=0, process_count=1):
  """`n_steps` train steps on seeded random global batches; returns (losses, final state).

  With several processes each feeds its contiguous slice of every global batch, so any
  mesh or process count sees the same global data.
  """
  from diffgrm_jax import model as model_lib
  from diffgrm_jax import sharding as shard_lib
  from diffgrm_jax import train_step as step_lib
  model = model_lib.from_config(config)
  tx, schedule = step_lib.make_optimizer(config, 10)
  state, shardings = step_lib.init_state(model, tx, config, mesh)
  bs = shard_lib.batch_sharding(config, mesh)
  step = step_lib.make_train_step(model, tx, schedule, config, shardings, bs)
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
