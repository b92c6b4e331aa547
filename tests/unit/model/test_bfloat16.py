"""`model.dtype=bfloat16`: parameters stay float32, the heads accumulate and return float32,
and logits, loss and gradients stay close to the float32 model's (stated tolerances)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from support.tiny import random_batch, tiny_model
from diffgrm_jax.training import step as step_lib


def _params_and_inputs():
  f32 = tiny_model()
  params = nn.meta.unbox(f32.init(jax.random.key(0), *f32.example_inputs()))["params"]
  # Away from the near-uniform logits of a fresh init, so the comparison means something.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = tree.unflatten([p + 0.08 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  batch = random_batch(np.random.default_rng(0), batch_size=16, length=8)
  views = np.random.default_rng(1).random((16, 4, 4)) < 0.5
  return params, batch, views


def _logits(model, params, batch, views):
  codes = np.broadcast_to(batch["target_sid"][:, None], views.shape)
  return jax.jit(model.apply)({"params": params}, batch["hist_sids"], batch["hist_mask"],
                              codes, ~views)


def test_bfloat16_logits_are_float32_and_close_to_the_float32_model():
  params, batch, views = _params_and_inputs()
  a = np.asarray(_logits(tiny_model(), params, batch, views))
  b = _logits(tiny_model(dtype=jnp.bfloat16), params, batch, views)
  assert b.dtype == jnp.float32
  b = np.asarray(b)
  # Accumulated in float32: most values are not bfloat16 numbers (a bf16 einsum cast
  # afterwards would give only bf16 numbers).
  assert np.mean(b != np.asarray(jnp.asarray(b, jnp.bfloat16), np.float32)) > 0.5
  scale = np.abs(a).max()
  assert scale > 1.0
  # bfloat16 keeps 8 bits of mantissa (relative 2^-8 per rounding), through 3 blocks.
  assert np.abs(a - b).max() < 0.03 * scale, (np.abs(a - b).max(), scale)
  # The ranking of codes barely moves: the argmax agrees almost everywhere.
  assert np.mean(a.argmax(-1) == b.argmax(-1)) > 0.97


def test_bfloat16_loss_and_gradients_are_close_to_float32():
  params, batch, views = _params_and_inputs()

  def loss(model):
    def f(p):
      logits = _logits(model, p, batch, views)
      tok = step_lib.token_losses(logits, batch["target_sid"], 0.1)
      return step_lib.reduce_loss(tok, jnp.asarray(views), batch["weight"], "pooled")
    return jax.jit(jax.value_and_grad(f))(params)

  (la, ga), (lb, gb) = loss(tiny_model()), loss(tiny_model(dtype=jnp.bfloat16))
  assert abs(float(la) - float(lb)) < 0.01 * float(la), (la, lb)
  a, b = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]) for g in (ga, gb))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(gb))  # float32 parameters
  cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  assert cosine > 0.99, cosine
  assert np.linalg.norm(a - b) < 0.15 * np.linalg.norm(a)


def test_bfloat16_beam_search_finds_the_float32_top_10():
  """Confidence search (beam 32) over a 200-item catalogue: the bfloat16 model's top-10 SIDs
  are mostly the float32 model's (scores are float32 sums in both)."""
  from diffgrm_jax.decoding import decoders  # pylint: disable=import-outside-toplevel
  from diffgrm_jax.decoding import settings as decoding  # pylint: disable=import-outside-toplevel
  from diffgrm_jax.sid import catalogue as catalogue_lib  # pylint: disable=import-outside-toplevel
  params, batch, _ = _params_and_inputs()
  rng = np.random.default_rng(2)
  sids = rng.integers(0, 16, (201, 4)).astype(np.int32)
  cat = catalogue_lib.Catalogue.from_sids(sids, 16)
  search = decoding.SearchSettings("confidence", widths=(32,) * 4, top_k=10)
  top = []
  for dtype in (jnp.float32, jnp.bfloat16):
    dec = decoders.make_decoder(tiny_model(dtype=dtype), cat, search)
    pred, _, valid = jax.jit(dec.apply)({"params": params}, dec.tables, batch["hist_sids"],
                                        batch["hist_mask"])
    assert np.asarray(valid)[:, :10].all()
    top.append([{tuple(s) for s in row[:10]} for row in np.asarray(pred)])
  overlap = np.mean([len(a & b) / 10 for a, b in zip(*top)])
  assert overlap >= 0.8, overlap
