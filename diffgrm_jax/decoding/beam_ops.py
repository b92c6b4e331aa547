"""Beam bookkeeping shared by the searches: top-k with padding and gathering beams."""

import jax
import jax.numpy as jnp


def top_k_padded(x, k):
  """Top-k along the last axis; k may exceed its size (padded with -inf / index 0)."""
  size = x.shape[-1]
  vals, idx = jax.lax.top_k(x, min(k, size))
  if k > size:
    pad = [(0, 0)] * (x.ndim - 1) + [(0, k - size)]
    vals = jnp.pad(vals, pad, constant_values=-jnp.inf)
    idx = jnp.pad(idx, pad)
  return vals, idx


def gather_beams(x, parent):
  """x: [B, W, ...], parent: int [B, M] -> [B, M, ...]."""
  return jnp.take_along_axis(x, parent.reshape(parent.shape + (1,) * (x.ndim - 2)), axis=1)
