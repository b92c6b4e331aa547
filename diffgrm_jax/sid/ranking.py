"""From ranked semantic IDs to ranked items.

A decoded SID can stand for several items (a collision group). Two ways to turn the
decoder's ranked SIDs into one ranked item list:

- `score` (default): every item of every decoded SID is a candidate, scored by
  log P(SID) + log P(item | SID); all candidates are merged into one list, best first.
  log P(SID) is the beam score (the decoder's summed log-probabilities). P(item | SID) is
  estimated from how often each item is a training target, smoothed within its group:
  P(i | g) = (n_i + alpha) / (sum_{j in g} n_j + alpha |g|), so an item never seen in
  training keeps a share and a group of one item has P = 1 (its SID's score unchanged).
- `expand`: each ranked SID in turn is expanded into its whole group in the catalogue's
  tie order (most trained-on first), and the list is cut at K. One large group can fill
  the whole list; kept for comparison.

Ties in `score` keep the decoder's order: a better-ranked SID first, then the group's tie
order. See docs/method.md, "Metrics", for how item-level metrics use these lists.
"""

import numpy as np

ITEM_RANKINGS = ("score", "expand")


def item_log_prior(catalogue, item_counts, alpha=1.0):
  """log P(item | its SID) for every item: float64 [n_items + 1] (row 0, padding: -inf).

  item_counts: [n_items + 1] training-target counts; alpha > 0: additive smoothing.
  """
  counts = np.asarray(item_counts, np.float64)
  if alpha <= 0:
    raise ValueError(f"smoothing alpha must be > 0, got {alpha}")
  out = np.full(len(counts), -np.inf)
  items = catalogue.group_items
  sizes = np.diff(catalogue.group_offsets)
  group_of = np.repeat(np.arange(len(sizes)), sizes)  # group of each entry of group_items
  totals = np.bincount(group_of, weights=counts[items], minlength=len(sizes))
  out[items] = np.log(counts[items] + alpha) - np.log(totals[group_of] + alpha * sizes[group_of])
  return out


def _candidates(catalogue, groups):
  """groups int [U, S] (-1 = none) -> items int [U, S, M] (0 = none), M = largest group."""
  sizes = np.diff(catalogue.group_offsets)
  g = np.maximum(groups, 0)
  size = np.where(groups >= 0, sizes[g] if len(sizes) else 0, 0)
  m = max(int(size.max()) if size.size else 0, 1)
  j = np.arange(m)
  take = j < size[..., None]
  src = catalogue.group_offsets[g][..., None] + np.where(take, j, 0)
  src = np.minimum(src, max(len(catalogue.group_items) - 1, 0))
  items = catalogue.group_items[src] if len(catalogue.group_items) else np.zeros(src.shape, np.int32)
  return np.where(take, items, 0)


def rank_items(catalogue, groups, sid_scores, log_prior, k, method="score"):
  """Ranked items per user.

  groups: int [U, S] collision group of each ranked SID (best first; -1 = invalid);
  sid_scores: float [U, S] the SIDs' log-probabilities; log_prior: [n_items + 1] from
  `item_log_prior`. Returns items int32 [U, k] (0 = no item) and scores float64 [U, k]
  (-inf where no item; for `expand`, the SID's score).
  """
  if method not in ITEM_RANKINGS:
    raise ValueError(f"item ranking must be one of {ITEM_RANKINGS}, got {method!r}")
  groups = np.asarray(groups)
  u, s = groups.shape
  cand = _candidates(catalogue, groups)  # [U, S, M]
  m = cand.shape[-1]
  base = np.where(groups >= 0, np.asarray(sid_scores, np.float64), -np.inf)[..., None]
  if method == "score":
    key = np.where(cand > 0, base + log_prior[cand], -np.inf)
  else:  # expand: SID position decides; the stable sort keeps each group's tie order
    key = np.where(cand > 0, -np.arange(s, dtype=np.float64)[None, :, None], -np.inf)
  flat_key = key.reshape(u, s * m)
  order = np.argsort(-flat_key, axis=1, kind="stable")[:, :k]
  items = np.take_along_axis(cand.reshape(u, s * m), order, axis=1)
  if method == "score":
    out_s = np.take_along_axis(flat_key, order, axis=1)
  else:  # each item carries its SID's score
    out_s = np.take_along_axis(base[..., 0], order // m, axis=1)
  if order.shape[1] < k:  # fewer candidate slots than k
    pad = ((0, 0), (0, k - order.shape[1]))
    items, out_s = np.pad(items, pad), np.pad(out_s, pad, constant_values=-np.inf)
  ok = items > 0
  return np.where(ok, items, 0).astype(np.int32), np.where(ok, out_s, -np.inf)


def item_hit_ranks(ranked_items, target_item, miss):
  """Rank of the target in each ranked item list: int [U] (`miss` where absent)."""
  hit = np.asarray(ranked_items) == np.asarray(target_item)[:, None]
  hit &= np.asarray(ranked_items) > 0
  return np.where(hit.any(1), hit.argmax(1), miss).astype(np.int64)
