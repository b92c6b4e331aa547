"""The model's attention structure: bidirectional decoder, no padding leak (also under the
release's padding), causal AR, the Sports size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from support.tiny import tiny_model
from diffgrm_jax.model.diffgrm import DiffGRM


def _setup(kind="diffgrm", **kw):
  m = tiny_model(kind, **kw)
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
    masked = tiny_model()
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
