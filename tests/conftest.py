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


@pytest.fixture
def config():
  return tiny_config()
