"""dropout.Dropout: its mask is the documented function of the hashed words, keeps at the
stated rate independently (neighbours, lags, seeds), preserves the mean, and passes
gradients through the kept elements only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgrm_jax.model import dropout as drop_lib


def _apply(rate, x, seed=0, deterministic=False):
  return drop_lib.Dropout(rate).apply({}, x, deterministic=deterministic,
                                      rngs={"dropout": jax.random.key(seed)})


def _np_mix(x):
  # The finaliser written out in numpy (uint64 arithmetic, reduced mod 2**32).
  x = x.astype(np.uint64)
  x ^= x >> 16
  x = (x * 0x21F0AAAD) & 0xFFFFFFFF
  x ^= x >> 15
  x = (x * 0x735A2D97) & 0xFFFFFFFF
  return (x ^ (x >> 15)).astype(np.uint32)


@pytest.mark.parametrize("shape", [(3, 8), (2, 5, 7), (9,)])
def test_mask_is_the_pairs_of_16_bit_halves_of_the_hashed_words(shape):
  # Reference built in numpy: word i (row-major) is mix(mix(i ^ s0) ^ s1) with the two
  # seeds drawn from the key; element 2j of a row is the low half of word j, element
  # 2j + 1 its high half (odd rows drop the last high half).
  key = jax.random.key(7)
  threshold = drop_lib.keep_threshold(0.3)
  *lead, last = shape
  s0, s1 = np.asarray(jax.random.bits(key, (2,), jnp.uint32))
  n_words = int(np.prod(lead, dtype=int)) * ((last + 1) // 2)
  words = _np_mix(_np_mix(np.arange(n_words, dtype=np.uint32) ^ s0) ^ s1)
  words = words.reshape(*lead, (last + 1) // 2)
  halves = np.empty((*lead, 2 * words.shape[-1]), np.uint32)
  halves[..., 0::2] = words & 0xFFFF
  halves[..., 1::2] = words >> 16
  expected = halves[..., :last] < threshold
  np.testing.assert_array_equal(np.asarray(drop_lib.keep_mask(key, threshold, shape)), expected)


def test_keep_rate_independence_and_mean():
  rate = 0.1
  assert drop_lib.keep_threshold(rate) == 58982  # round(0.9 * 65536)
  x = jnp.ones((64, 4, 1024), jnp.float32)
  y = np.asarray(_apply(rate, x, seed=1))
  kept = y != 0
  n = kept.size
  p = drop_lib.keep_threshold(rate) / 65536
  # Binomial: 6 standard deviations of the kept fraction.
  assert abs(kept.mean() - p) < 6 * np.sqrt(p * (1 - p) / n)
  # Neighbours share a 32-bit word: their masks must still be independent.
  both = (kept[..., 0::2] & kept[..., 1::2]).mean()
  assert abs(both - p * p) < 6 * np.sqrt(p * p * (1 - p * p) / (n // 2))
  # Kept values are scaled by 1 / p exactly, so the expectation is the input.
  np.testing.assert_allclose(y[kept], 65536 / 58982, rtol=1e-7)
  assert abs(y.mean() - 1.0) < 6 * np.sqrt((1 - p) / p / n)
  # Other seeds, other masks.
  assert (np.asarray(_apply(rate, x, seed=2)) != y).any()


@pytest.mark.parametrize("rate", [0.5, 0.1])
def test_masks_are_independent_across_lags_and_keys(rate):
  # Words are a hash of consecutive positions: elements one word, a few words and one row
  # apart, and the same position under neighbouring keys, must keep independently.
  p = drop_lib.keep_threshold(rate) / 65536
  shape = (256, 1024)
  masks = [np.asarray(drop_lib.keep_mask(jax.random.fold_in(jax.random.key(3), i),
                                         drop_lib.keep_threshold(rate), shape))
           for i in range(2)]
  flat = masks[0].reshape(-1)
  def check(a, b):
    both = (a & b).mean()
    assert abs(both - p * p) < 6 * np.sqrt(p * p * (1 - p * p) / a.size), (both, p * p)
  for lag in (2, 3, 64, 1024, 4096):
    check(flat[:-lag], flat[lag:])
  check(masks[0], masks[1])
  # Every bit of the 16-bit halves is used: the kept fraction at a threshold of one
  # power of two tests the bits above it.
  for t in (1 << 15, 1 << 12, 1 << 8):
    kept = np.asarray(drop_lib.keep_mask(jax.random.key(5), t, shape))
    q = t / 65536
    assert abs(kept.mean() - q) < 6 * np.sqrt(q * (1 - q) / kept.size), (t, kept.mean())


def test_deterministic_zero_rate_and_full_rate():
  x = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_array_equal(_apply(0.5, x, deterministic=True), x)
  np.testing.assert_array_equal(_apply(0.0, x), x)
  np.testing.assert_array_equal(_apply(1.0, x), jnp.zeros_like(x))


def test_gradient_flows_through_kept_elements_only():
  x = jnp.linspace(-1.0, 1.0, 2 * 33).reshape(2, 33)
  y = _apply(0.5, x, seed=3)
  g = jax.grad(lambda v: (_apply(0.5, v, seed=3) * jnp.arange(66.0).reshape(2, 33)).sum())(x)
  scale = 65536 / drop_lib.keep_threshold(0.5)
  kept = np.asarray(y) != 0
  np.testing.assert_allclose(np.asarray(g), np.where(kept, np.arange(66.0).reshape(2, 33) * scale,
                                                     0.0), rtol=1e-6)
  assert 0 < kept.sum() < kept.size


def test_bfloat16_stays_bfloat16():
  x = jnp.ones((4, 16), jnp.bfloat16)
  assert _apply(0.1, x).dtype == jnp.bfloat16
