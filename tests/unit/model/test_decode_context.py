"""The decoding fast path (model/decode_context.py) gives the plain decoder's logits: for
every digit, for queried digits only, with and without the release's padding."""

import jax
import numpy as np
import pytest

from diffgrm_jax.model import decode_context
from test_diffgrm import _setup


@pytest.mark.parametrize("kind", ["diffgrm", "autoregressive"])
def test_query_digits_give_the_full_logits_there(kind):
  """Computing the last block at some digits only leaves those digits' logits unchanged,
  whichever digits (per row, any order) are asked for."""
  m, var, hs, hm, codes, known = _setup(kind)
  known = np.random.default_rng(2).random(known.shape) < 0.5
  enc = m.apply(var, hs, hm, method="encode")
  full = m.apply(var, enc, hm, codes, known, method="decode")
  context = decode_context.build(m, var, enc)
  rng = np.random.default_rng(3)
  for n_query in (1, 3):
    query = np.stack([[rng.permutation(4)[:n_query] for _ in range(codes.shape[1])]
                      for _ in range(codes.shape[0])]).astype(np.int32)  # [B, V, M]
    part = decode_context.decode(m, var, context, hm, codes, known, query)
    assert part.shape == query.shape + (full.shape[-1],)  # slot m is digit query[..., m]
    want = np.take_along_axis(np.asarray(full), query[..., None], axis=2)
    np.testing.assert_allclose(part, want, atol=1e-5)


@pytest.mark.parametrize("kind,mask_cross", [("diffgrm", True), ("diffgrm", False),
                                              ("autoregressive", True)])
def test_decode_context_gives_the_plain_logits(kind, mask_cross):
  """Cross-attention and the first block's self-attention folded into their projections
  (`decode_context.build`, as decoding runs) give the plain decoder's logits, for every digit
  and for queried digits only."""
  m, var, hs, hm, codes, known = _setup(kind, mask_cross_attention=mask_cross)
  # Weights 8x the init's: attention far from uniform, so a wrong fold shows.
  var = jax.tree_util.tree_map(lambda p: p * 8, var)
  rng = np.random.default_rng(4)
  known = rng.random(known.shape) < 0.5
  enc = m.apply(var, hs, hm, method="encode")
  context = decode_context.build(m, var, enc)
  assert (context.rows is None) == (kind == "autoregressive")
  full = np.asarray(m.apply(var, enc, hm, codes, known, method="decode"))
  fast = decode_context.decode(m, var, context, hm, codes, known)
  np.testing.assert_allclose(fast, full, atol=1e-4 * np.abs(full).max())
  query = np.argsort(rng.random(codes.shape), -1)[..., :2].astype(np.int32)
  part = decode_context.decode(m, var, context, hm, codes, known, query)
  np.testing.assert_allclose(part, np.take_along_axis(full, query[..., None], axis=2),
                             atol=1e-4 * np.abs(full).max())
