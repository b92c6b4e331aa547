"""SASRec's states: causal (a prediction never reads later items), independent of the padded
width, and `score_last` is the last real state against the item table."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from diffgrm_jax.model.sasrec import SASRec, inverse_positions

N_ITEMS, L = 40, 10


def _model_and_params(n_blocks=2, heads=2):
  model = SASRec(n_items=N_ITEMS, max_history_len=L, d_model=16, n_heads=heads,
                 n_enc_layers=n_blocks, dropout=0.2, attention_dropout=0.2)
  return model, nn.meta.unbox(model.init(jax.random.key(0), *model.example_inputs()))


def _history(rng, lengths, width=L):
  items = np.zeros((len(lengths), width), np.int32)
  for r, n in enumerate(lengths):
    items[r, :n] = rng.integers(1, N_ITEMS + 1, n)
  return items


def test_a_prediction_at_t_does_not_read_the_items_after_t():
  model, params = _model_and_params()
  rng = np.random.default_rng(0)
  items = _history(rng, [10, 10, 7])
  h = model.apply(params, items, items > 0)
  t = 4
  changed = items.copy()
  for r, n in enumerate([10, 10, 7]):
    changed[r, t + 1:n] = rng.integers(1, N_ITEMS + 1, n - t - 1)
  h2 = model.apply(params, changed, changed > 0)
  np.testing.assert_allclose(h2[:, :t + 1], h[:, :t + 1], atol=1e-6)
  # ... while the later positions do read them (the test could fail).
  assert np.abs(np.asarray(h2[:, t + 1:7] - h[:, t + 1:7])).max() > 1e-3


def test_states_do_not_depend_on_the_padded_width():
  model, params = _model_and_params()
  items = _history(np.random.default_rng(1), [3, 8, 1], width=8)
  wide = np.pad(items, ((0, 0), (0, 2)))
  a = model.apply(params, items, items > 0, method="score_last")
  b = model.apply(params, wide, wide > 0, method="score_last")
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_score_last_is_the_last_real_state_against_the_table():
  model, params = _model_and_params(n_blocks=1, heads=1)
  items = _history(np.random.default_rng(2), [5, 2])
  h = np.asarray(model.apply(params, items, items > 0))
  table = np.asarray(params["params"]["item_embedding"])
  scores = np.asarray(model.apply(params, items, items > 0, method="score_last"))
  for r, n in enumerate([5, 2]):
    np.testing.assert_allclose(scores[r, 1:], table[1:] @ h[r, n - 1], rtol=1e-5, atol=1e-5)
  assert np.all(scores[:, 0] == -np.inf)
  excl = np.asarray(model.apply(params, items, items > 0, True, method="score_last"))
  for r in range(2):
    seen = set(items[r][items[r] > 0])
    assert all(excl[r, i] == -np.inf for i in seen)
    rest = [i for i in range(1, N_ITEMS + 1) if i not in seen]
    np.testing.assert_array_equal(excl[r, rest], scores[r, rest])


def test_positions_count_from_the_most_recent_item():
  mask = jnp.asarray([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
  np.testing.assert_array_equal(inverse_positions(mask), [[2, 1, 0, 0], [0, 0, 0, 0]])


def test_training_draws_dropout_and_evaluation_does_not():
  model, params = _model_and_params()
  items = _history(np.random.default_rng(3), [6, 9])
  det = model.apply(params, items, items > 0)
  a = model.apply(params, items, items > 0, deterministic=False,
                  rngs={"dropout": jax.random.key(1)})
  b = model.apply(params, items, items > 0, deterministic=False,
                  rngs={"dropout": jax.random.key(1)})
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a - det)).max() > 1e-3
