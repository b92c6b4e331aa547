"""Tests of diffgrm_jax.sid.legality: the sparse tables give exactly the brute-force legal mask
(and the dense bitset's) for every known-digit pattern, with collisions, padding, a large
catalogue (rows stored as code lists and as bitsets) and a codebook wider than one byte."""

import jax.numpy as jnp
import numpy as np
import pytest

from support.catalogue_reference import pad_tables
from diffgrm_jax.analysis import dense_legality
from diffgrm_jax.sid import legality


def _items(rng, n_items, n, c, n_collide):
  items = rng.integers(0, c, size=(n_items, n))
  for _ in range(n_collide):  # collision groups: copy an item's SID onto another
    a, b = rng.integers(0, n_items, size=2)
    items[b] = items[a]
  return items


def _queries(rng, items, n_queries, c):
  """Partials with 0..N-1 known digits; half agree with a real item on the known ones."""
  n = items.shape[1]
  codes = rng.integers(0, c, size=(n_queries, n))
  codes[: n_queries // 2] = items[rng.integers(0, len(items), n_queries // 2)]
  known = np.zeros((n_queries, n), bool)
  for i, t in enumerate(rng.integers(0, n, n_queries)):
    known[i, rng.choice(n, t, replace=False)] = True
  return codes, known


def _brute_force(items, codes, known, c):
  n = items.shape[1]
  want = np.zeros(codes.shape + (c,), bool)
  for i in range(len(codes)):
    match = np.all((items == codes[i]) | ~known[i], axis=1)
    for d in np.flatnonzero(~known[i]):
      want[i, d, items[match, d]] = True
  return want


def _sparse_mask(items, codes, known, c, digits=None, **pad):
  n = items.shape[1]
  tables = pad_tables(*legality.build(np.unique(items, axis=0), c), n, **pad)
  return np.asarray(legality.legal_mask(legality.LegalityTables(*map(jnp.asarray, tables)),
                                        jnp.asarray(codes), jnp.asarray(known), n, c,
                                        digits=None if digits is None else jnp.asarray(digits)))


@pytest.mark.parametrize("n,c,n_items", [(4, 8, 40), (4, 8, 3), (3, 16, 200)])
def test_sparse_equals_brute_force_and_dense(n, c, n_items):
  rng = np.random.default_rng(n_items)
  items = _items(rng, n_items, n, c, n_collide=5)
  codes, known = _queries(rng, items, 400, c)
  want = _brute_force(items, codes, known, c)
  assert want.any() and not want.all()
  np.testing.assert_array_equal(_sparse_mask(items, codes, known, c), want)
  keys, bitsets = dense_legality.build_dense(np.unique(items, axis=0), c)
  dense = dense_legality.dense_legal_mask(jnp.asarray(keys), jnp.asarray(bitsets), jnp.asarray(codes),
                                          jnp.asarray(known), n, c)
  np.testing.assert_array_equal(np.asarray(dense), want)


def test_padding_keeps_the_mask_and_rejects_too_small_sizes():
  rng = np.random.default_rng(3)
  items = _items(rng, 20, 4, 8, n_collide=3)
  codes, known = _queries(rng, items, 200, 8)
  want = _brute_force(items, codes, known, 8)
  np.testing.assert_array_equal(_sparse_mask(items, codes, known, 8, n_keys=600), want)
  np.testing.assert_array_equal(_sparse_mask(items, codes, known, 8, n_keys=600, n_codes=5000), want)
  with pytest.raises(ValueError, match="n_keys"):
    _sparse_mask(items, codes, known, 8, n_keys=10)


def test_empty_catalogue_has_no_legal_code():
  codes, known = np.zeros((3, 4), np.int32), np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], bool)
  assert not _sparse_mask(np.zeros((0, 4), np.int64), codes, known, 8).any()


@pytest.mark.parametrize("n,c", [(4, 256), (3, 512)])
def test_large_catalogue(n, c):
  """40k items: multi-million-entry code array, full-byte codes (256) and two-byte codes (512)."""
  rng = np.random.default_rng(c)
  items = _items(rng, 40_000, n, c, n_collide=2_000)
  # Structure like real SIDs: the first digit is skewed, so short prefixes have many codes.
  items[:, 0] = np.minimum(rng.geometric(0.05, len(items)), c - 1)
  keys, offsets, codes_flat = legality.build(np.unique(items, axis=0), c)
  assert codes_flat.dtype == (np.uint8 if c <= 256 else np.uint16)
  assert len(codes_flat) > 100_000 and offsets[-1] == len(codes_flat)
  # Both row forms occur: short code lists and bitsets (of bitset_width entries).
  lengths = np.diff(offsets)
  width = legality.bitset_width(c)
  assert (lengths == width).sum() > 100
  assert ((lengths > 0) & (lengths <= legality.list_max(c))).sum() > 10_000
  assert not ((lengths > legality.list_max(c)) & (lengths != width)).any()
  codes, known = _queries(rng, items, 300, c)
  want = _brute_force(items, codes, known, c)
  np.testing.assert_array_equal(_sparse_mask(items, codes, known, c), want)
  # Some digits only (decoding asks for the still-masked ones), known ones included.
  digits = np.argsort(rng.random(codes.shape), -1)[:, :2]
  np.testing.assert_array_equal(_sparse_mask(items, codes, known, c, digits=digits),
                                np.take_along_axis(want, digits[..., None], axis=1))
