"""Training's decoder with its last block at chosen rows (model/masked_rows.py)."""

import numpy as np

from diffgrm_jax.model import masked_rows
from test_diffgrm import _setup


def test_query_rows_give_the_full_logits_there():
  """The last block at chosen positions of the flattened views (any number per view, as
  training's masked digits are) leaves those positions' logits unchanged."""
  m, var, hs, hm, codes, known = _setup()
  known = np.random.default_rng(2).random(known.shape) < 0.5
  enc = m.apply(var, hs, hm, method="encode")
  full = np.asarray(m.apply(var, enc, hm, codes, known, method="decode"))
  b, v, n = codes.shape
  # 5 of the 8 positions per row, 4 + 1, 1 + 4 and 3 + 2 per view, in any order.
  rows = np.array([[0, 1, 2, 3, 4], [1, 4, 5, 6, 7], [2, 3, 6, 0, 5]], np.int32)
  part = np.asarray(masked_rows.decode(m, var, enc, hm, codes, known, rows))
  flat = lambda a: a.reshape(b, v * n, -1)
  got = np.take_along_axis(flat(part), rows[..., None], axis=1)
  want = np.take_along_axis(flat(full), rows[..., None], axis=1)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert not np.allclose(part, full, atol=1e-5)  # the other positions are not computed
