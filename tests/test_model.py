"""The model's attention structure: bidirectional decoder, no padding leak, causal AR."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgrm_jax.model import DiffGRM


def _setup(kind="diffgrm", **kw):
  m = DiffGRM(codebook_size=16, d_model=32, n_heads=2, n_inner=64, n_dec_layers=2,
              max_history_len=12, kind=kind, **kw)
  rng = np.random.default_rng(0)
  b, l, n, v = 3, 6, 4, 2
  hs = rng.integers(0, 16, (b, l, n)).astype(np.int32)
  hm = np.arange(l)[None] < np.array([[2], [6], [4]])
  codes = rng.integers(0, 16, (b, v, n)).astype(np.int32)
  known = np.ones((b, v, n), bool)
  variables = m.init(jax.random.key(0), hs, hm, codes, known)
  return m, variables, hs, hm, codes, known


def test_decoder_is_bidirectional():
  m, var, hs, hm, codes, known = _setup()
  base = m.apply(var, hs, hm, codes, known)
  codes2 = codes.copy()
  codes2[..., 3] = (codes2[..., 3] + 1) % 16
  changed = m.apply(var, hs, hm, codes2, known)
  # Digit 3's known code influences the prediction at digit 0 (no causal mask).
  assert np.abs(np.asarray(changed[..., 0, :] - base[..., 0, :])).max() > 1e-4


def test_mask_embedding_replaces_unknown_codes():
  m, var, hs, hm, codes, known = _setup()
  known = known.copy()
  known[..., 2] = False
  base = m.apply(var, hs, hm, codes, known)
  codes2 = codes.copy()
  codes2[..., 2] = (codes2[..., 2] + 5) % 16
  # The code under a mask is invisible to the model.
  np.testing.assert_allclose(m.apply(var, hs, hm, codes2, known), base, atol=1e-6)


@pytest.mark.parametrize("mask_cross", [True, False])
def test_padding_does_not_leak(mask_cross):
  m, var, hs, hm, codes, known = _setup(mask_cross_attention=mask_cross)
  base = m.apply(var, hs, hm, codes, known)
  rng = np.random.default_rng(1)
  extra = rng.integers(0, 16, (hs.shape[0], 4, 4)).astype(np.int32)  # garbage under padding
  hs2 = np.concatenate([hs, extra], axis=1)
  hm2 = np.concatenate([hm, np.zeros((hs.shape[0], 4), bool)], axis=1)
  out = m.apply(var, hs2, hm2, codes, known)
  # Masked: padding gets no weight. Unmasked (the release): zeroed padded rows take
  # softmax weight as if every history were padded to max_history_len, whatever the
  # padded length of the batch.
  np.testing.assert_allclose(out, base, atol=1e-5)
  if not mask_cross:
    masked = DiffGRM(**{**{f: getattr(m, f) for f in ("codebook_size", "d_model", "n_heads",
                                                       "n_inner", "n_dec_layers",
                                                       "max_history_len")},
                        "mask_cross_attention": True})
    assert np.abs(np.asarray(out - masked.apply(var, hs2, hm2, codes, known))).max() > 1e-5
    # ... and what lies under the padding does not matter.
    hs3 = hs2.copy()
    hs3[:, hs.shape[1]:] = (hs3[:, hs.shape[1]:] + 3) % 16
    np.testing.assert_allclose(m.apply(var, hs3, hm2, codes, known), out, atol=1e-5)


def test_padded_history_content_is_ignored():
  m, var, hs, hm, codes, known = _setup()
  hs2 = np.where(hm[..., None], hs, (hs + 7) % 16)
  np.testing.assert_allclose(m.apply(var, hs2, hm, codes, known), m.apply(var, hs, hm, codes, known),
                             atol=1e-5)


def test_autoregressive_decoder_is_causal():
  m, var, hs, hm, codes, known = _setup(kind="autoregressive")
  base = np.asarray(m.apply(var, hs, hm, codes, known))
  codes2 = codes.copy()
  codes2[..., 2] = (codes2[..., 2] + 1) % 16
  out = np.asarray(m.apply(var, hs, hm, codes2, known))
  # Position n predicts digit n from digits < n: digit 2 affects position 3 only.
  np.testing.assert_allclose(out[..., :3, :], base[..., :3, :], atol=1e-6)
  assert np.abs(out[..., 3, :] - base[..., 3, :]).max() > 1e-4


def test_sports_parameter_count_matches_spec():
  m = DiffGRM()  # Sports sizes: d 256, 4 heads, 1 + 4 layers, n_inner 1024
  shapes = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 50, 4), jnp.int32),
                          jnp.ones((1, 50), bool), jnp.zeros((1, 1, 4), jnp.int32),
                          jnp.zeros((1, 1, 4), bool))
  import flax.linen as nn
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes)))
  # The paper: about 5.6M parameters for the Sports recipe (counted by hand in test_configs.py).
  assert 5.3e6 < n < 5.9e6, n



def test_shared_keys_match_explicit_broadcast():
  """Folding views into the query axis equals attending per view to copied keys."""
  from diffgrm_jax.model import Attention
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 2, 4, 32)), jnp.float32)  # [B, V, Q, D]
  kv = jnp.asarray(rng.normal(size=(3, 7, 32)), jnp.float32)    # [B, K, D]
  bias = jnp.where(jnp.arange(7) < 5, 0.0, -1e9)[None, None, None, None, :]
  att = Attention(2, 32, 0.0)
  var = att.init(jax.random.key(0), x, kv, bias, True)
  shared = att.apply(var, x, kv, bias, True)
  copied = att.apply(var, x, jnp.broadcast_to(kv[:, None], (3, 2, 7, 32)), bias[:, 0, None], True)
  np.testing.assert_allclose(shared, copied, atol=1e-5)


@pytest.mark.parametrize("kind", ["diffgrm", "autoregressive"])
def test_query_digits_give_the_full_logits_there(kind):
  """Computing the last block at some digits only leaves those digits' logits unchanged,
  whichever digits (per row, any order) are asked for."""
  m, var, hs, hm, codes, known = _setup(kind)
  known = np.random.default_rng(2).random(known.shape) < 0.5
  enc = m.apply(var, hs, hm, method=DiffGRM.encode)
  full = m.apply(var, enc, hm, codes, known, method=DiffGRM.decode)
  rng = np.random.default_rng(3)
  for n_query in (1, 3):
    query = np.stack([[rng.permutation(4)[:n_query] for _ in range(codes.shape[1])]
                      for _ in range(codes.shape[0])]).astype(np.int32)  # [B, V, M]
    part = m.apply(var, enc, hm, codes, known, query_digits=query, method=DiffGRM.decode)
    assert part.shape == query.shape + (full.shape[-1],)  # slot m is digit query[..., m]
    want = np.take_along_axis(np.asarray(full), query[..., None], axis=2)
    np.testing.assert_allclose(part, want, atol=1e-5)


@pytest.mark.parametrize("kind,mask_cross", [("diffgrm", True), ("diffgrm", False),
                                              ("autoregressive", True)])
def test_decode_context_gives_the_plain_logits(kind, mask_cross):
  """Cross-attention and the first block's self-attention folded into their projections
  (`decode_context`, as decoding runs) give the plain decoder's logits, for every digit
  and for queried digits only."""
  m, var, hs, hm, codes, known = _setup(kind, mask_cross_attention=mask_cross)
  # Weights 8x the init's: attention far from uniform, so a wrong fold shows.
  var = jax.tree_util.tree_map(lambda p: p * 8, var)
  rng = np.random.default_rng(4)
  known = rng.random(known.shape) < 0.5
  enc = m.apply(var, hs, hm, method=DiffGRM.encode)
  context = m.apply(var, enc, method=DiffGRM.decode_context)
  assert (context["rows"] is None) == (kind == "autoregressive")
  full = np.asarray(m.apply(var, enc, hm, codes, known, method=DiffGRM.decode))
  fast = m.apply(var, enc, hm, codes, known, context=context, method=DiffGRM.decode)
  np.testing.assert_allclose(fast, full, atol=1e-4 * np.abs(full).max())
  query = np.argsort(rng.random(codes.shape), -1)[..., :2].astype(np.int32)
  part = m.apply(var, enc, hm, codes, known, query_digits=query, context=context,
                 method=DiffGRM.decode)
  np.testing.assert_allclose(part, np.take_along_axis(full, query[..., None], axis=2),
                             atol=1e-4 * np.abs(full).max())


def test_query_rows_give_the_full_logits_there():
  """The last block at chosen positions of the flattened views (any number per view, as
  training's masked digits are) leaves those positions' logits unchanged."""
  m, var, hs, hm, codes, known = _setup()
  known = np.random.default_rng(2).random(known.shape) < 0.5
  enc = m.apply(var, hs, hm, method=DiffGRM.encode)
  full = np.asarray(m.apply(var, enc, hm, codes, known, method=DiffGRM.decode))
  b, v, n = codes.shape
  # 5 of the 8 positions per row, 4 + 1, 1 + 4 and 3 + 2 per view, in any order.
  rows = np.array([[0, 1, 2, 3, 4], [1, 4, 5, 6, 7], [2, 3, 6, 0, 5]], np.int32)
  part = np.asarray(m.apply(var, enc, hm, codes, known, query_rows=rows, method=DiffGRM.decode))
  flat = lambda a: a.reshape(b, v * n, -1)
  got = np.take_along_axis(flat(part), rows[..., None], axis=1)
  want = np.take_along_axis(flat(full), rows[..., None], axis=1)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert not np.allclose(part, full, atol=1e-5)  # the other positions are not computed


def test_gelu_is_the_exact_gelu_with_its_gradient():
  # Independent reference: x * Phi(x) from Python's math.erf in double precision, and its
  # derivative Phi(x) + x * phi(x).
  import math
  from diffgrm_jax.model import gelu
  x = np.linspace(-12.0, 12.0, 4801)
  phi = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
  want = x * phi
  dwant = phi + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
  got = np.asarray(gelu(jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-6)
  dgot = np.asarray(jax.vmap(jax.grad(gelu))(jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(dgot, dwant, atol=2e-6, rtol=1e-5)
