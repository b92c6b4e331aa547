"""Item ranking across decoded SIDs against a brute force written with plain loops."""

import math

import numpy as np
import pytest

from diffgrm_jax.sid import ranking
from diffgrm_jax.sid.catalogue import Catalogue


def _catalogue(rng, n_items=60, n_sids=14, n=3, c=4):
  # Few distinct SIDs for many items: collision groups of several sizes.
  table = rng.integers(0, c, (n_sids, n))
  table = np.unique(table, axis=0)
  sids = np.zeros((n_items + 1, n), np.int64)
  sids[1:] = table[rng.integers(0, len(table), n_items)]
  counts = np.zeros(n_items + 1, np.int64)
  counts[1:] = rng.integers(0, 6, n_items)
  return Catalogue.from_sids(sids, c, item_popularity=counts), sids, counts


def _brute_prior(sids, counts, alpha):
  out = {}
  for i in range(1, len(sids)):
    group = [j for j in range(1, len(sids)) if tuple(sids[j]) == tuple(sids[i])]
    total = sum(counts[j] for j in group)
    out[i] = math.log((counts[i] + alpha) / (total + alpha * len(group)))
  return out


def test_item_log_prior_matches_brute_force_and_sums_to_one():
  cat, sids, counts = _catalogue(np.random.default_rng(0))
  prior = ranking.item_log_prior(cat, counts, alpha=0.5)
  brute = _brute_prior(sids, counts, 0.5)
  np.testing.assert_allclose([prior[i] for i in brute], list(brute.values()), rtol=1e-12)
  assert prior[0] == -np.inf
  sizes = np.diff(cat.group_offsets)
  for g in range(cat.n_sids):  # a distribution within every group
    items = cat.group_items[cat.group_offsets[g]:cat.group_offsets[g + 1]]
    assert math.isclose(np.exp(prior[items]).sum(), 1.0, rel_tol=1e-12), sizes[g]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_score_ranking_matches_brute_force(seed):
  # log P(item | SID) itself is checked against a brute force above.
  rng = np.random.default_rng(seed)
  cat, sids, counts = _catalogue(rng)
  prior = ranking.item_log_prior(cat, counts)
  u, s, k = 7, 5, 9
  groups = np.stack([rng.permutation(cat.n_sids)[:s] for _ in range(u)])
  groups[0, 3:] = -1  # fewer valid SIDs than slots
  scores = -np.sort(rng.random((u, s)) * 5, axis=1)
  items, item_scores = ranking.rank_items(cat, groups, scores, prior, k)
  for r in range(u):
    cand = []
    for pos in range(s):
      if groups[r, pos] < 0:
        continue
      sid = cat.group_sids[groups[r, pos]]
      members = [i for i in range(1, len(sids)) if tuple(sids[i]) == tuple(sid)]
      members.sort(key=lambda i: (-counts[i], i))  # the catalogue's tie order
      cand += [(scores[r, pos] + prior[i], i) for i in members]
    cand.sort(key=lambda x: -x[0])  # stable: ties keep SID rank, then tie order
    want = [i for _, i in cand[:k]] + [0] * max(0, k - len(cand))
    want_s = [v for v, _ in cand[:k]] + [-np.inf] * max(0, k - len(cand))
    assert items[r].tolist() == want
    np.testing.assert_allclose(item_scores[r], want_s, rtol=1e-12)


def test_expand_ranking_equals_whole_group_expansion():
  rng = np.random.default_rng(4)
  cat, _, counts = _catalogue(rng)
  prior = ranking.item_log_prior(cat, counts)
  groups = np.stack([rng.permutation(cat.n_sids)[:4] for _ in range(6)])
  groups[2, 1] = -1
  scores = -np.sort(rng.random(groups.shape), axis=1)
  items, _ = ranking.rank_items(cat, groups, scores, prior, 10, method="expand")
  want = []
  for r in range(len(groups)):
    row = []
    for g in groups[r]:
      if g >= 0:
        row += cat.group_items[cat.group_offsets[g]:cat.group_offsets[g + 1]].tolist()
    want.append((row + [0] * 10)[:10])
  assert items.tolist() == want


def test_item_hit_ranks():
  ranked = np.array([[3, 5, 0], [2, 0, 0], [7, 8, 9]])
  got = ranking.item_hit_ranks(ranked, np.array([5, 4, 7]), miss=99)
  assert got.tolist() == [1, 99, 0]


def test_bad_method_and_alpha():
  cat, _, counts = _catalogue(np.random.default_rng(5))
  with pytest.raises(ValueError, match="item ranking"):
    ranking.rank_items(cat, np.zeros((1, 1), int), np.zeros((1, 1)), np.zeros(61), 3, "bogus")
  with pytest.raises(ValueError, match="alpha"):
    ranking.item_log_prior(cat, counts, alpha=0)
