"""Dropout that spends 16 random bits per element: two elements from each 32-bit draw.

`flax.linen.Dropout` draws a 32-bit word per element (`jax.random.bernoulli`). On CPU the
threefry2x32 generator behind those words is the costliest elementwise work of the train
step (a fifth of it for the Sports recipe), and 16 bits decide a keep probability to
2**-16 just as well. Here each element compares its 16 bits with
`round(keep * 2**16)` and kept values are scaled by `2**16 / that`, the inverse of the
keep probability actually drawn, so the expected output equals the input exactly; the
rate itself is honoured to 2**-16 (0.1 draws 0.1000061).

Same interface as `flax.linen.Dropout` for what the model uses: `Dropout(rate)(x,
deterministic=...)`, randomness from the module's 'dropout' rng stream.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_LEVELS = 1 << 16


def keep_threshold(rate):
  """Elements whose 16-bit draw is below this are kept: round((1 - rate) * 2**16)."""
  return int(round((1.0 - float(rate)) * _LEVELS))


def keep_mask(key, threshold, shape):
  """bool[shape], each True independently with probability threshold / 2**16.

  Bits along the last axis come in pairs from one 32-bit word (low half, high half); an
  odd last axis drops the final high half.
  """
  *lead, last = shape
  words = jax.random.bits(key, (*lead, (last + 1) // 2), jnp.uint32)
  halves = jnp.stack([words & np.uint32(_LEVELS - 1), words >> np.uint32(16)], axis=-1)
  halves = halves.reshape(*lead, 2 * ((last + 1) // 2))[..., :last]
  return halves < np.uint32(threshold)


class Dropout(nn.Module):
  """Inverted dropout: zero each element with probability `rate`, scale the rest up."""
  rate: float

  @nn.compact
  def __call__(self, x, deterministic):
    if deterministic or self.rate == 0.0:
      return x
    threshold = keep_threshold(self.rate)
    if threshold == 0:
      return jnp.zeros_like(x)
    keep = keep_mask(self.make_rng("dropout"), threshold, x.shape)
    return jnp.where(keep, x * jnp.asarray(_LEVELS / threshold, x.dtype), jnp.zeros((), x.dtype))
