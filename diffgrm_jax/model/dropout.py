"""Dropout that spends 16 random bits per element, from a counter hash keyed per call.

`flax.linen.Dropout` draws a 32-bit threefry2x32 word per element
(`jax.random.bernoulli`). On CPU that generator is the costliest elementwise work of the
train step: threefry spends 20 rounds of add-rotate-xor on each pair of words. Two
savings (benchmarks/results/speed.md, "Dropout words from a counter hash, ..."):

- 16 bits decide a keep probability to 2**-16 just as well as 32, so each 32-bit word
  decides two elements (its low and high halves).
- The words are a keyed hash of their position, not threefry output: each call draws
  two 32-bit seeds from its key with threefry (the module's 'dropout' stream, so keys
  fold and split exactly as flax's do), then word i is
  `mix(mix(i ^ seed0) ^ seed1)`, where `mix` is an xor-shift-multiply integer finaliser
  (Wellons' `lowbias32` shape with his better constants). Ten integer operations per
  word against threefry's ~50. `mix` is a bijection of 32-bit words with full avalanche
  (each input bit flips each output bit with probability ~1/2), so distinct positions
  give distinct, uncorrelated words; tests/unit/model/test_dropout.py checks the keep rate,
  neighbour and lag independence and seed-to-seed independence.

Each element compares its 16 bits with `round(keep * 2**16)` and kept values are scaled
by `2**16 / that`, the inverse of the keep probability actually drawn, so the expected
output equals the input exactly; the rate itself is honoured to 2**-16 (0.1 draws
0.1000061).

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


def mix(x):
  """uint32 -> uint32 bijection with full avalanche: xor-shift, multiply, twice, xor-shift."""
  x = x ^ (x >> np.uint32(16))
  x = x * np.uint32(0x21F0AAAD)
  x = x ^ (x >> np.uint32(15))
  x = x * np.uint32(0x735A2D97)
  return x ^ (x >> np.uint32(15))


def hashed_words(key, shape):
  """uint32[shape]: word i (row-major position) is mix(mix(i ^ s0) ^ s1), (s0, s1) drawn from key."""
  seeds = jax.random.bits(key, (2,), jnp.uint32)
  # Positions as uint32: one call never draws 2**32 words (that would be 16 GiB of them).
  position = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape)
  return mix(mix(position ^ seeds[0]) ^ seeds[1])


def word_shape(shape):
  """The 32-bit words a mask of `shape` takes: two elements of the last axis per word."""
  *lead, last = shape
  return (*lead, (last + 1) // 2)


def mask_from_words(w, threshold, shape):
  """bool[shape] from words uint32[word_shape(shape)]: True where an element's 16 bits are
  below `threshold`. Bits along the last axis come in pairs from one 32-bit word (low half,
  high half); an odd last axis drops the final high half."""
  *lead, last = shape
  halves = jnp.stack([w & np.uint32(_LEVELS - 1), w >> np.uint32(16)], axis=-1)
  halves = halves.reshape(*lead, 2 * ((last + 1) // 2))[..., :last]
  return halves < np.uint32(threshold)


def keep_mask(key, threshold, shape):
  """bool[shape], each True independently with probability threshold / 2**16."""
  return mask_from_words(hashed_words(key, word_shape(shape)), threshold, shape)


def apply_mask(x, keep, threshold):
  """x with the elements outside `keep` zeroed and the rest scaled by 2**16 / threshold,
  the inverse of the keep probability drawn (so the expected output equals x)."""
  return jnp.where(keep, x * jnp.asarray(_LEVELS / threshold, x.dtype), jnp.zeros((), x.dtype))


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
    return apply_mask(x, keep_mask(self.make_rng("dropout"), threshold, x.shape), threshold)
