"""Semantic IDs: PCA fitted on training items only, collision-free mode, stats, caching."""


import ml_collections
import numpy as np
import pytest

from support.data import base_config
from diffgrm_jax.data import prepare_data
from diffgrm_jax.data import protocol
from diffgrm_jax.data import sids
from diffgrm_jax.data.errors import DataError


def _sid_config(**kw):
  s = dict(n_digit=4, codebook_size=16, pca_dim=8, whiten=True, faiss_threads=1,
           collision_free=False)
  return ml_collections.ConfigDict(s | kw)


def _catalogue(n_items=160, dim=16, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(10, dim))
  return (centres[rng.integers(10, size=n_items)] + 0.3 * rng.normal(size=(n_items, dim))
          ).astype(np.float32)


def test_pca_is_fitted_on_training_items_only():
  n_items = 160
  # Items 1..159 fill users' training positions 0..5; item 160 is only user 0's test target.
  seqs = [np.array([(6 * u + j) % 159 + 1 for j in range(7)] + [n_items if u == 0 else u + 1],
                   np.int32) for u in range(120)]
  train_items = protocol.training_items(seqs, n_items)
  assert not train_items[n_items] and train_items[1:n_items].all()
  emb = _catalogue(n_items)
  before, _ = sids.build_sids(emb, train_items, _sid_config())
  emb2 = emb.copy()
  emb2[n_items - 1] = 50.0  # a wild vector for the test-only item
  after, _ = sids.build_sids(emb2, train_items, _sid_config())
  np.testing.assert_array_equal(before[:n_items], after[:n_items])
  # The same change moves other items' SIDs when every item is used for fitting, so the
  # check above would catch a PCA/OPQ fitted on all items.
  everything = np.ones(n_items + 1, bool)
  a, _ = sids.build_sids(emb, everything, _sid_config())
  b, _ = sids.build_sids(emb2, everything, _sid_config())
  assert (a[:n_items] != b[:n_items]).any()


def _direct_stats(table, test_targets):
  keys, inverse, counts = np.unique(table[1:], axis=0, return_inverse=True, return_counts=True)
  size = counts[inverse.reshape(-1)]
  return {"unique_sids": len(keys), "collision_groups": int((counts > 1).sum()),
          "largest_group": int(counts.max()), "surplus_items": int(len(size) - len(keys)),
          "test_targets_sharing_sid": float((size[np.asarray(test_targets) - 1] > 1).mean())}


def test_collision_free_mode_and_stats():
  base = _catalogue(120)
  emb = np.concatenate([base, base[:40], base[:40]])  # 80 exact duplicates: collisions
  train_items = np.ones(len(emb) + 1, bool)
  targets = np.arange(1, 201, 3)
  table, info = sids.build_sids(emb, train_items, _sid_config())
  stats = sids.sid_stats(table, targets, 16)
  direct = _direct_stats(table, targets)
  assert {k: stats[k] for k in direct} == direct
  assert stats["collision_groups"] >= 40 and stats["largest_group"] >= 3
  assert stats["codes_used_per_digit"] == [len(set(table[1:, d])) for d in range(4)]

  free, info = sids.build_sids(emb, train_items, _sid_config(collision_free=True))
  assert len({tuple(r) for r in free[1:]}) == len(emb)
  assert info["collision_free_moved"] == direct["surplus_items"]
  # Every moved item changed exactly one digit, and the first of each group kept its SID.
  changed = (free[1:] != table[1:]).sum(1)
  assert set(changed.tolist()) <= {0, 1} and changed.sum() == direct["surplus_items"]
  free_stats = sids.sid_stats(free, targets, 16)
  assert free_stats["largest_group"] == 1 and free_stats["test_targets_sharing_sid"] == 0.0


def test_codebook_size_must_be_a_power_of_two():
  with pytest.raises(DataError, match="codebook_size=24: must be a power of two"):
    sids.nbits_of(24)
  assert sids.nbits_of(32) == 5


def test_synthetic_prepare_is_cached_and_keyed(tmp_path, monkeypatch):
  c = base_config(tmp_path)
  c.data.synthetic.n_users, c.data.synthetic.n_items = 200, 80
  first = prepare_data(c, verbose=False)
  assert first.sids.shape == (81, 4) and (first.sids[0] == 0).all()
  assert first.item_train_counts.sum() == len(first.train)

  def boom(*a, **k):
    raise AssertionError("rebuilt although cached")
  monkeypatch.setattr(sids, "build_sids", boom)
  again = prepare_data(c, verbose=False)
  np.testing.assert_array_equal(first.sids, again.sids)
  assert again.cache_key == first.cache_key and again.stats == first.stats
  c.sid.collision_free = True  # a new key: rebuilds (and hits the patched function)
  with pytest.raises(AssertionError, match="rebuilt"):
    prepare_data(c, verbose=False)
