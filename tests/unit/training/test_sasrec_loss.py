"""SASRec's losses: the sampled softmax is the full softmax when its negatives are every other
item, per-sequence negatives are per-position ones repeated, gradients stay finite with
repeated negatives, and the step trains on every position that has a next item."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from support.configs import load_config_file
from diffgrm_jax.model import factory
from diffgrm_jax.training import sasrec_loss

B, L, D, N_ITEMS = 3, 5, 8, 12


def _inputs(seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  states = jax.random.normal(k[0], (B, L, D))
  table = jax.random.normal(k[1], (N_ITEMS + 1, D))
  targets = np.array(jax.random.randint(k[2], (B, L), 1, N_ITEMS + 1))
  targets[0, 3:] = 0  # positions without a next item
  weights = jnp.asarray([1.0, 1.0, 0.0])  # the last row is padding
  return states, table, jnp.asarray(targets), weights


def test_sampled_softmax_over_every_other_item_is_the_full_softmax():
  states, table, targets, weights = _inputs()
  others = np.zeros((B, L, N_ITEMS - 1), np.int32)
  for b, l in itertools.product(range(B), range(L)):
    t = int(targets[b, l])
    others[b, l] = [i for i in range(1, N_ITEMS + 1) if i != max(t, 1)][:N_ITEMS - 1]
  full = sasrec_loss.full_softmax_terms(states, table, targets, weights)
  sampled = sasrec_loss.sampled_softmax_terms(states, table, targets, jnp.asarray(others),
                                              weights)
  np.testing.assert_allclose(sampled[0], full[0], rtol=1e-5)
  assert float(full[1]) == float(sampled[1]) == 3 + 5  # real targets of the real rows
  # The full softmax is a real cross-entropy: numpy's, over items 1..N.
  s, t = np.asarray(states), np.asarray(targets)
  logits = s @ np.asarray(table)[1:].T
  lse = np.log(np.exp(logits).sum(-1))
  ce = lse - np.take_along_axis(logits, np.maximum(t - 1, 0)[..., None], -1)[..., 0]
  w = (t > 0) * np.asarray(weights)[:, None]
  np.testing.assert_allclose(float(full[0]), (ce * w).sum(), rtol=1e-5)


def test_per_sequence_negatives_are_per_position_ones_repeated():
  states, table, targets, weights = _inputs(1)
  neg = jax.random.randint(jax.random.key(5), (B, 7), 1, N_ITEMS + 1)
  a = sasrec_loss.sampled_softmax_terms(states, table, targets, neg, weights)
  b = sasrec_loss.sampled_softmax_terms(states, table, targets,
                                        jnp.broadcast_to(neg[:, None], (B, L, 7)), weights)
  np.testing.assert_allclose(a[0], b[0], rtol=1e-6)


def test_gradients_are_finite_with_repeated_negatives_and_the_target_among_them():
  states, table, targets, weights = _inputs(2)
  neg = jnp.concatenate([jnp.broadcast_to(targets[..., None], (B, L, 3)),
                         jnp.full((B, L, 4), 2)], axis=-1)
  for fn, args in ((sasrec_loss.sampled_softmax_terms, (neg,)),
                   (sasrec_loss.full_softmax_terms, ())):
    g = jax.grad(lambda s, t: fn(s, t, targets, *args, weights)[0], argnums=(0, 1))(states, table)
    assert all(np.isfinite(np.asarray(x)).all() for x in g)
    assert np.abs(np.asarray(g[0][2])).max() == 0  # the padding row has no gradient
    assert np.abs(np.asarray(g[1][0])).max() == 0  # nor the padding item


def test_loss_terms_count_the_positions_with_a_next_item():
  config = load_config_file("sasrec.py", "demo")
  for loss in ("softmax", "sampled_softmax"):
    config.model.sasrec_loss = loss
    model = factory.from_config(config, n_items=N_ITEMS)
    params = nn.meta.unbox(model.init(jax.random.key(0), *model.example_inputs()))["params"]
    items = np.array([[3, 4, 5, 0], [7, 0, 0, 0]], np.int32)
    targets = np.array([[4, 5, 6, 0], [2, 0, 0, 0]], np.int32)
    batch = {"items": items, "targets": targets, "weight": np.ones(2, np.float32)}
    num, den = sasrec_loss.loss_terms(params, model, batch, jax.random.key(1), config)
    assert float(den) == 4 and np.isfinite(float(num)) and float(num) > 0
