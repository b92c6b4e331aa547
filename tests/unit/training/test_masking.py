"""Mask rules of each strategy, checked over many draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgrm_jax.training import masking


def _random(n_rows=4000, **kw):
  args = dict(strategy="random", augment_factor=4, mask_prob=0.5, force_all_masked=True)
  args.update(kw)
  return np.asarray(masking.make_masks(jax.random.key(0), n_rows, 4, **args))


def test_random_forced_view_and_at_least_one_mask():
  m = _random()
  assert m.shape == (4000, 4, 4)
  assert m[:, 0].all()  # view 0 all-masked
  assert m.any(-1).all()  # every view masks something


def test_random_masking_rate_near_mask_prob():
  m = _random(mask_prob=0.3, force_all_masked=False)
  # P(masked) = p + (1-p)^4 / 4 after the "at least one" fix.
  p = 0.3
  expected = p + (1 - p) ** 4 / 4
  assert abs(m.mean() - expected) < 0.01, (m.mean(), expected)


def test_random_per_view_probabilities():
  m = _random(view_probs=(1.0, 0.75, 0.5, 0.25), force_all_masked=False)
  rates = m.mean(axis=(0, 2))
  expected = [p + (1 - p) ** 4 / 4 for p in (1.0, 0.75, 0.5, 0.25)]
  np.testing.assert_allclose(rates, expected, atol=0.015)


def test_rows_do_not_depend_on_batch_size():
  small = _random(n_rows=10)
  np.testing.assert_array_equal(_random(n_rows=50)[:10], small)


def test_sequential_reveals_a_growing_prefix_of_one_order():
  m = np.asarray(masking.make_masks(jax.random.key(1), 500, 4, strategy="sequential",
                                    augment_factor=4))
  assert m[:, 0].all()
  np.testing.assert_array_equal(m.sum(-1), np.broadcast_to([4, 3, 2, 1], (500, 4)))
  # Nested: what view v reveals stays revealed in view v+1.
  assert (m[:, 1:] <= m[:, :-1]).all()
  # Different rows use different orders.
  assert len({tuple(r) for r in m[:, 3].argmax(-1)[:, None]}) > 1


def test_prefix_view_v_reveals_exactly_digits_before_v():
  m = np.asarray(masking.make_masks(jax.random.key(0), 3, 4, strategy="prefix",
                                    augment_factor=4))
  expected = [[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]
  np.testing.assert_array_equal(m, np.broadcast_to(np.array(expected, bool), (3, 4, 4)))


def test_guided_masks_least_confident_digits_nested():
  conf = jnp.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.6, 0.95]])
  m = np.asarray(masking.guided_views(conf))
  expected_order = [[1, 3, 2, 0], [0, 2, 1, 3]]  # least to most confident
  for r in range(2):
    for t in range(4):
      np.testing.assert_array_equal(np.flatnonzero(m[r, t]), sorted(expected_order[r][:t + 1]))
  assert (m[:, 1:] >= m[:, :-1]).all()


@pytest.mark.parametrize("strategy", ["guided", "sequential", "prefix"])
def test_masked_rows_list_every_masked_position(strategy):
  """The strategies with a fixed count mask exactly `masked_count` digits per row, and
  `masked_rows` lists them (flattened v * N + n, increasing)."""
  n, b = 4, 6
  conf = jax.random.uniform(jax.random.key(1), (b, n))
  masked = np.asarray(masking.make_masks(jax.random.key(0), b, n, strategy=strategy,
                                         augment_factor=n, confidence=conf))
  count = masking.masked_count(strategy, n)
  assert count == 10 and (masked.reshape(b, -1).sum(-1) == count).all()
  rows = np.asarray(masking.masked_rows(jnp.asarray(masked), count))
  for r in range(b):
    np.testing.assert_array_equal(rows[r], np.flatnonzero(masked[r].reshape(-1)))
  assert masking.masked_count("random", n) is None
