"""Evaluation of the kinds that score every item (SASRec): exact ranks, on the device.

A history's scores over all items give both levels at once, with no search:

  item level  the target's rank among all items (ties: lower item id first);
  SID level   the rank of the target's SID once the ranked items are mapped to their SIDs
              and de-duplicated in rank order: a SID stands where its best item stands.

Both ranks are counted on the device from the scores ([B, n_items + 1] never leaves it),
so a validation transfers one rank per user. `top_items` gives the ranked item lists
(`eval --output`-style lists, `recommend`). The metrics are those of `metrics.recall_ndcg`,
under the same names as the SID-writing kinds' evaluation (`sid/...`, `item/...`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
from tqdm import tqdm

from diffgrm_jax.evaluation import metrics


def exact_ranks(scores, target_item, item_group, n_groups):
  """scores float [B, I] (item 0 = padding, -inf), target_item int [B], item_group int [I]
  (-1 for item 0) -> (item rank, SID rank) int32 [B], 0-based (module docstring)."""
  ids = jnp.arange(scores.shape[1])
  t = target_item[:, None]
  s_t = jnp.take_along_axis(scores, t, axis=1)
  item_rank = ((scores > s_t) | ((scores == s_t) & (ids[None] < t))).sum(1)
  # Per group: its best score, and the lowest id among the items that reach it (where the
  # de-duplicated list places the group). Item 0 goes to an extra group, left out.
  group = jnp.where(item_group >= 0, item_group, n_groups)
  best = jax.ops.segment_max(scores.T, group, num_segments=n_groups + 1)  # [G + 1, B]
  at_best = scores.T == best[group]
  first = jax.ops.segment_min(jnp.where(at_best, ids[:, None], scores.shape[1]), group,
                              num_segments=n_groups + 1)
  best, first = best[:n_groups], first[:n_groups]
  tg = group[target_item]
  b_t = jnp.take_along_axis(best, tg[None], axis=0)
  f_t = jnp.take_along_axis(first, tg[None], axis=0)
  sid_rank = ((best > b_t) | ((best == b_t) & (first < f_t))).sum(0)
  return item_rank.astype(jnp.int32), sid_rank.astype(jnp.int32)


@functools.lru_cache(maxsize=8)
def _rank_fn(model, n_groups, exclude_history, k):
  """(item rank, SID rank) and, for k > 0, the k best items, from one scoring pass."""
  def fn(variables, items, mask, target_item, item_group):
    scores = model.apply(variables, items, mask, exclude_history, method="score_last")
    top = jax.lax.top_k(scores, k)[1].astype(jnp.int32) if k else None
    return (*exact_ranks(scores, target_item, item_group, n_groups), top)
  return jax.jit(fn)


@functools.lru_cache(maxsize=8)
def _top_fn(model, k, exclude_history):
  def fn(variables, items, mask):
    scores = model.apply(variables, items, mask, exclude_history, method="score_last")
    scores, top = jax.lax.top_k(scores, k)
    return top.astype(jnp.int32), scores
  return jax.jit(fn)


def _inputs(batch, batch_sharding, keys):
  arrays = [np.asarray(batch[k]) for k in keys]
  if batch_sharding is None:
    return arrays
  return [jax.make_array_from_process_local_data(batch_sharding, a) for a in arrays]


def _gather(outputs, batch_sharding):
  if batch_sharding is not None:
    outputs = multihost_utils.process_allgather(outputs, tiled=True)
  return [np.asarray(o) for o in outputs]


def evaluate(variables, model, catalogue, batches, *, exclude_history=False, mesh=None,
             batch_sharding=None, progress=True, keep_items=False, desc="rank all items"):
  """Metrics of an item-scoring model over `batches` (dicts as `data.eval_batches` yields:
  'hist_items', 'hist_mask', 'target_item', 'weight', 'user'): {'sid/...', 'item/...',
  'n_users'} as Python floats; `keep_items` adds 'ranked_items' {user: top-10 item ids}.
  `exclude_history`: the history's own items are not ranked (`decode.exclude_history`)."""
  item_group = jnp.asarray(catalogue.item_group, jnp.int32)
  if mesh is not None:
    item_group = jax.device_put(item_group, NamedSharding(mesh, PartitionSpec()))
  rank = _rank_fn(model, int(catalogue.n_sids), bool(exclude_history),
                  max(metrics.KS) if keep_items else 0)
  item_r, sid_r, weights, kept = [], [], [], {}
  bar = tqdm(batches, desc=desc, unit="batch", leave=False,
             disable=not progress or jax.process_index() != 0)
  for batch in bar:
    items, mask, target = _inputs(batch, batch_sharding, ("hist_items", "hist_mask",
                                                          "target_item"))
    ir, sr, top = rank(variables, items, mask, target, item_group)
    ir, sr = _gather([ir, sr], batch_sharding)
    w, users = _gather([np.asarray(batch["weight"]), np.asarray(batch["user"])],
                       batch_sharding)
    item_r.append(ir)
    sid_r.append(sr)
    weights.append((w > 0).astype(np.float64))
    if keep_items:
      top, = _gather([top], batch_sharding)
      kept.update({int(u): [int(i) for i in row] for u, wt, row in zip(users, w, top) if wt > 0})
  weights = np.concatenate(weights) if weights else np.zeros(0)
  out = {"n_users": float((weights > 0).sum())}
  for level, ranks in (("sid", sid_r), ("item", item_r)):
    ranks = np.concatenate(ranks).astype(np.int64) if ranks else np.zeros(0, np.int64)
    out.update({f"{level}/{k}": v
                for k, v in metrics.recall_ndcg(ranks, metrics.KS, weights).items()})
  if keep_items:
    out["ranked_items"] = kept
  return out


def top_items(variables, model, batches, k, *, exclude_history=False, batch_sharding=None):
  """Yields (rows {'user', 'weight'}, items int32 [b, k], scores [b, k]) per batch: each
  history's k best items (ties: lower id first), best first."""
  fn = _top_fn(model, int(k), bool(exclude_history))
  for batch in batches:
    items, mask = _inputs(batch, batch_sharding, ("hist_items", "hist_mask"))
    top, scores = _gather(fn(variables, items, mask), batch_sharding)
    rows = dict(zip(("user", "weight"), _gather(
        [np.asarray(batch["user"]), np.asarray(batch["weight"])], batch_sharding)))
    yield rows, top, scores
