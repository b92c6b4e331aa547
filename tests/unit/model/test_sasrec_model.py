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


def _layer_norm(x, p, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _left_padded_reference(params, items, n_heads):
  """numpy: the history left-padded to full width L, causal attention with NO key padding
  mask (so every real position also attends to the zero padding rows), one block."""
  p = params["params"]
  table, pos = np.asarray(p["item_embedding"]), np.asarray(p["position_embedding"])
  blk = jax.tree.map(np.asarray, p["block_0"])
  dense = lambda x, q: x @ q["kernel"] + q["bias"]
  out = []
  for row in items:
    seq = row[row > 0]
    n = len(seq)
    x = np.zeros((L, table.shape[1]))
    x[L - n:] = table[seq] + pos[np.arange(n)[::-1]]  # position 0 = most recent
    q_in = _layer_norm(x, blk["ln_attn"], 1e-5)
    d = x.shape[1]
    hd = d // n_heads
    split = lambda y: y.reshape(L, n_heads, hd)
    q = split(dense(q_in, blk["query"])) / np.sqrt(hd)
    k, v = split(dense(x, blk["key"])), split(dense(x, blk["value"]))
    logits = np.einsum("qhd,khd->hqk", q, k)
    logits = np.where(np.tril(np.ones((L, L), bool))[None], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    att = np.einsum("hqk,khd->qhd", w, v).reshape(L, d)
    x = q_in + dense(att, blk["out"])
    f = _layer_norm(x, blk["ln_ffn"], 1e-5)
    y = dense(np.maximum(dense(f, blk["ffn_in"]), 0), blk["ffn_out"])
    x = _layer_norm(f + y, p["final_ln"], 1e-8)
    out.append(x[L - n:])  # the real positions, oldest first
  return out


def test_padding_keys_equal_attention_over_left_padded_zeros():
  model = SASRec(n_items=N_ITEMS, max_history_len=L, d_model=16, n_heads=2, n_enc_layers=1,
                 sasrec_padding_keys=True)
  params = nn.meta.unbox(model.init(jax.random.key(0), *model.example_inputs()))
  # Non-zero biases everywhere, so the padding rows' keys and values are not zero.
  rng = np.random.default_rng(5)
  params = jax.tree.map(lambda a: a + 0.3 * rng.standard_normal(a.shape).astype(a.dtype)
                        if a.ndim == 1 else a, params)
  lengths = [3, 10, 1, 6]
  items = _history(rng, lengths, width=6 + 4)[:, :max(lengths)]
  h = np.asarray(model.apply(params, items, items > 0))
  for r, (want, n) in enumerate(zip(_left_padded_reference(params, items, 2), lengths)):
    np.testing.assert_allclose(h[r, :n], want, rtol=2e-4, atol=2e-4)
  # Without the padding keys the states differ for histories shorter than L (could fail).
  plain = SASRec(n_items=N_ITEMS, max_history_len=L, d_model=16, n_heads=2, n_enc_layers=1)
  h0 = np.asarray(plain.apply(params, items, items > 0))
  assert np.abs(h0[0, :3] - h[0, :3]).max() > 1e-3
  np.testing.assert_allclose(h0[1], h[1], rtol=2e-4, atol=2e-4)  # full length: no padding


def test_rectools_init_draws_qkv_as_one_fused_xavier_matrix_and_torch_ffn_biases():
  d = 64
  stats = {}
  for init in ("xavier", "rectools"):
    model = SASRec(n_items=N_ITEMS, max_history_len=L, d_model=d, n_heads=1, n_enc_layers=1,
                   sasrec_init=init)
    block = nn.meta.unbox(model.init(jax.random.key(0), *model.example_inputs()))["params"]
    block = block["block_0"]
    stats[init] = {name: np.asarray(block[name]["kernel"]).std()
                   for name in ("query", "key", "value", "out")}
    stats[init]["ffn_bias"] = np.concatenate([np.asarray(block[n]["bias"])
                                              for n in ("ffn_in", "ffn_out")])
    stats[init]["qkv_bias"] = np.concatenate([np.asarray(block[n]["bias"])
                                              for n in ("query", "key", "value")])
  x, r = stats["xavier"], stats["rectools"]
  for name in ("query", "key", "value"):  # 4096 draws each: the std within ~3%
    np.testing.assert_allclose(x[name], np.sqrt(2 / (2 * d)), rtol=0.05)
    np.testing.assert_allclose(r[name], np.sqrt(2 / (4 * d)), rtol=0.05)
  np.testing.assert_allclose(r["out"], np.sqrt(2 / (2 * d)), rtol=0.05)
  assert np.all(x["ffn_bias"] == 0) and np.all(r["qkv_bias"] == 0)
  bound = 1 / np.sqrt(d)
  assert np.abs(r["ffn_bias"]).max() <= bound and np.abs(r["ffn_bias"]).max() > 0.8 * bound
  np.testing.assert_allclose(r["ffn_bias"].std(), bound / np.sqrt(3), rtol=0.2)  # uniform


def test_padding_entry_dropout_is_that_of_its_n_pad_entries():
  # Dropout on n equal entries kept with q = 0.8 each, summed: the entry times
  # Binomial(n, q) / (n q), mean 1 and variance (1 - q) / (n q); dropping the one entry
  # whole would give variance (1 - q) / q whatever n is.
  from diffgrm_jax.model.sasrec import pad_key_dropout  # pylint: disable=g-import-not-at-top
  n_pad = np.array([45, 10, 1, 0] * 2000)
  f = np.asarray(pad_key_dropout(jnp.ones((len(n_pad), 1, 4, 1)), jnp.asarray(n_pad), 0.2,
                                 jax.random.key(0)))[..., 0]
  for n in (45, 10, 1):
    draws = f[n_pad == n].ravel()  # 8000 each
    np.testing.assert_allclose(draws.mean(), 1.0, atol=0.02)
    np.testing.assert_allclose(draws.var(), 0.2 / (0.8 * n), rtol=0.1)
    # Only the values a count of kept entries can give.
    counts = draws * n * 0.8
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)
  assert np.all(f[n_pad == 0] == 0)  # no padding: its entry already has no weight
