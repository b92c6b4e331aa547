"""Recall@K and NDCG@K at SID level and item level, and a popularity baseline.

Pure numpy functions of arrays. One target per user; the first hit counts; a hit at
0-based rank r scores 1 / log2(r + 2) for NDCG (rank 1 counts 1). A user whose target
is not in the top K scores 0. `MISS` marks a miss in rank arrays.

SID level: the ranked SIDs are compared with the target's SID (a collision counts as a
hit, as in the paper). Item level: the ranked SIDs are expanded into their items in
the catalogue's tie order (see `catalogue.Catalogue`), the list is truncated to K, and
the target item itself must appear. See docs/method.md, Metrics.
"""

import numpy as np

KS = (5, 10)
MISS = np.iinfo(np.int32).max


def sid_ranks(pred_sids, valid, target_sid):
  """pred_sids [U, K, N], valid bool [U, K], target_sid [U, N] -> 0-based rank or MISS [U]."""
  hit = np.all(np.asarray(pred_sids) == np.asarray(target_sid)[:, None, :], axis=-1)
  hit &= np.asarray(valid, bool)
  return np.where(hit.any(1), hit.argmax(1), MISS).astype(np.int64)


def item_ranks(pred_groups, group_sizes, target_item, item_group, item_rank_in_group):
  """Rank of the target item once ranked SIDs are expanded into their items.

  pred_groups: int [U, K] collision-group index of each ranked SID (-1 = invalid / no
  item); group_sizes: int [G]; target_item: int [U]; item_group, item_rank_in_group:
  int [n_items + 1] (the item's group and its position inside it) -> rank or MISS [U].
  """
  pred_groups = np.asarray(pred_groups)
  sizes = np.where(pred_groups >= 0, np.asarray(group_sizes)[np.maximum(pred_groups, 0)], 0)
  start = np.cumsum(sizes, axis=1) - sizes  # first item slot of each ranked SID
  tgt_group = np.asarray(item_group)[np.asarray(target_item)]
  hit = (pred_groups == tgt_group[:, None]) & (tgt_group[:, None] >= 0)
  first = hit.argmax(1)
  rank = start[np.arange(len(first)), first] + np.asarray(item_rank_in_group)[target_item]
  return np.where(hit.any(1), rank, MISS).astype(np.int64)


def recall_ndcg(ranks, ks=KS, weights=None):
  """ranks [U] (0-based, MISS = no hit) -> {'recall@k', 'ndcg@k'} weighted means (floats).

  weights [U]: 0 drops a row (padding); default all 1.
  """
  ranks = np.asarray(ranks)
  w = np.ones(len(ranks)) if weights is None else np.asarray(weights, np.float64)
  total = w.sum()
  out = {}
  for k in ks:
    hit = ranks < k
    gain = np.where(hit, 1.0 / np.log2(np.minimum(ranks, k) + 2.0), 0.0)
    out[f"recall@{k}"] = float((w * hit).sum() / total) if total else 0.0
    out[f"ndcg@{k}"] = float((w * gain).sum() / total) if total else 0.0
  return out


def popularity_ranking(item_train_counts, k):
  """Top-k item ids by training count (ties: lower id first; item 0 = padding excluded)."""
  counts = np.asarray(item_train_counts, np.float64).copy()
  counts[0] = -np.inf
  order = np.lexsort((np.arange(len(counts)), -counts))
  return order[:k]


def popularity_baseline(item_train_counts, sids, target_item, ks=KS, weights=None):
  """Recommend the most popular training items to everyone.

  Item level: the top-max(ks) items. SID level: the SIDs of the popular items in
  popularity order, duplicates (collisions) dropped after their first occurrence, top
  max(ks) of those. sids: int [n_items + 1, N]. Returns {'item/..', 'sid/..'}.
  """
  sids = np.asarray(sids)
  target_item = np.asarray(target_item)
  kmax = max(ks)
  ranking = popularity_ranking(item_train_counts, len(sids) - 1)
  top_items = ranking[:kmax]
  hit = top_items[None, :] == target_item[:, None]
  item_rank = np.where(hit.any(1), hit.argmax(1), MISS)
  _, first = np.unique(sids[ranking], axis=0, return_index=True)
  top_sids = sids[ranking[np.sort(first)[:kmax]]]
  sid_rank = sid_ranks(np.broadcast_to(top_sids, (len(target_item),) + top_sids.shape),
                       np.ones((len(target_item), len(top_sids)), bool), sids[target_item])
  out = {f"item/{k}": v for k, v in recall_ndcg(item_rank, ks, weights).items()}
  out.update({f"sid/{k}": v for k, v in recall_ndcg(sid_rank, ks, weights).items()})
  return out
