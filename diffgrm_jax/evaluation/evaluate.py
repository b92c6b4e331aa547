"""Decode every user of a split and compute SID- and item-level Recall/NDCG@{5,10}.

The same code runs on one CPU and on a multi-host mesh: with `batch_sharding`, each
process feeds its local rows, the decoder runs on global arrays, and outputs are
gathered so that every process computes the same metrics.

SID level ranks the first `top_k` decoded SIDs. Item level ranks the items of all
`item_sids` decoded SIDs with `ranking.rank_items` under the configured method
(`RankingSettings.item_ranking`, keys `item/...`); the same decode pass also ranks them
with the other method (keys `item_<method>/...`), so one evaluation compares both.
`decode_batches` and `rank_decoded` are shared with `recommender.Recommender`.

`validate` is what model selection reads during training: SID-level metrics only, the
hits counted on the device and one transfer per validation, over batches already on the
device; it equals `evaluate`'s `sid/` metrics (tests/unit/evaluation/test_metrics.py).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
from tqdm import tqdm

from diffgrm_jax.decoding import decoders
from diffgrm_jax.evaluation import metrics
from diffgrm_jax.sid import ranking


@functools.lru_cache(maxsize=8)
def _jitted_decoder(model, catalogue, search):
  dec = decoders.make_decoder(model, catalogue, search)
  return decoders.jit_decoder(dec), dec.tables


def compiled_decoder(model, catalogue, search, mesh=None):
  """Cached `(fn, tables)`: `fn(variables, tables, hist_sids, hist_mask)` is the jitted
  decoder's `apply` (compiled once per input shape), `tables` its legality tables
  (replicated over `mesh` when given). The cache key is (model, catalogue, `search`): a
  frozen `SearchSettings` names every choice of the search."""
  fn, tables = _jitted_decoder(model, catalogue, search)
  if mesh is not None:
    tables = jax.device_put(tables, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  return fn, tables


def decode_batches(variables, model, catalogue, batches, search, *, mesh=None,
                   batch_sharding=None, keys=("target_sid", "target_item", "weight", "user")):
  """Yields `(rows, pred, scores, valid)` per batch: `rows` the batch's `keys` (gathered over
  processes), pred int32 [b, S, N], scores [b, S], valid bool [b, S] (numpy), S =
  `search.item_sids`."""
  fn, tables = compiled_decoder(model, catalogue, search, mesh)
  for batch in batches:
    hist, mask = np.asarray(batch["hist_sids"], np.int32), np.asarray(batch["hist_mask"], bool)
    if batch_sharding is not None:
      hist = jax.make_array_from_process_local_data(batch_sharding, hist)
      mask = jax.make_array_from_process_local_data(batch_sharding, mask)
    pred, scores, valid = fn(variables, tables, hist, mask)
    local = {k: np.asarray(batch[k]) for k in keys if k in batch}
    if batch_sharding is not None:
      pred, scores, valid = multihost_utils.process_allgather((pred, scores, valid), tiled=True)
      local = multihost_utils.process_allgather(local, tiled=True)
    yield local, np.asarray(pred), np.asarray(scores), np.asarray(valid)


def rank_decoded(catalogue, pred, scores, valid, log_prior, k, method):
  """Ranked items (int32 [b, k], 0 = none) and their scores from decoded SIDs
  (`ranking.rank_items` over every returned SID)."""
  if method == "expand":
    # Every decoded SID is a catalogue SID (legality) with >= 1 item, so the first k items
    # come from the first k SIDs: sorting the rest would change nothing.
    pred, scores, valid = pred[:, :k], scores[:, :k], valid[:, :k]
  groups = np.where(valid, catalogue.sid_group(pred), -1)
  return ranking.rank_items(catalogue, groups, scores, log_prior, k, method)


@functools.partial(jax.jit, static_argnames=("top_k", "out_sharding"))
def _rank_counts(pred, valid, target_sid, weight, *, top_k, out_sharding=None):
  """How many real rows (weight > 0) hit at each rank of the first top_k SIDs: int32
  [top_k + 1], the last entry the misses."""
  hit = jnp.all(pred[:, :top_k] == target_sid[:, None, :], axis=-1) & valid[:, :top_k]
  rank = jnp.where(hit.any(1), jnp.argmax(hit, axis=1), top_k)
  counts = jnp.zeros(top_k + 1, jnp.int32).at[rank].add((weight > 0).astype(jnp.int32))
  return counts if out_sharding is None else jax.lax.with_sharding_constraint(counts, out_sharding)


_add = jax.jit(jnp.add)  # of two replicated arrays: stays on the devices, any process count


def validate(variables, model, catalogue, device_batches, search, *, mesh=None):
  """SID-level Recall/NDCG@{5,10} and 'n_users' of `device_batches`: (hist_sids,
  hist_mask, target_sid, weight) device arrays (global ones on a mesh). The decoder's
  outputs stay on the device; a histogram of hit ranks is summed there and read once."""
  fn, tables = compiled_decoder(model, catalogue, search, mesh)
  replicated = None if mesh is None else NamedSharding(mesh, PartitionSpec())
  counts = None
  for hist, mask, target_sid, weight in device_batches:
    pred, _, valid = fn(variables, tables, hist, mask)
    c = _rank_counts(pred, valid, target_sid, weight, top_k=search.top_k,
                     out_sharding=replicated)
    counts = c if counts is None else _add(counts, c)
  # Replicated on every device: each process reads its own copy (with several processes
  # the global array is not addressable as a whole).
  counts = (np.zeros(search.top_k + 1, np.int64) if counts is None
            else np.asarray(counts.addressable_data(0)))
  ranks = np.repeat(np.append(np.arange(search.top_k), metrics.MISS), counts)
  out = {"n_users": float(counts.sum())}
  out.update({f"sid/{k}": v for k, v in metrics.recall_ndcg(ranks, metrics.KS).items()})
  return out


def evaluate(variables, model, catalogue, batches, search, ranking_settings, *,
             log_prior=None, mesh=None, batch_sharding=None, progress=True, keep_items=False):
  """Decodes `batches` with `search` (a `SearchSettings`), ranks items as
  `ranking_settings` (a `RankingSettings`) says, and returns metrics as Python floats.

  batches: iterable of numpy dicts with 'hist_sids' [b, Lb, N] int32, 'hist_mask'
  [b, Lb] bool, 'target_sid' [b, N], 'target_item' [b], 'weight' [b] (0 = padding row)
  and 'user' [b] (-1 = padding); with `batch_sharding` these are this process's rows.
  log_prior: `ranking.item_log_prior` of the catalogue (default: uniform within groups,
  i.e. all training counts 0). Returns {'sid/recall@5', 'sid/ndcg@5', 'sid/recall@10',
  'sid/ndcg@10', 'item/...', 'item_<other ranking>/...', 'n_users'}; with `keep_items`
  also 'ranked_items': {user index: list of the top-K item ids under the configured
  ranking}. `progress` shows a tqdm bar (process 0 only).
  """
  if search.top_k < max(metrics.KS):
    raise ValueError(f"decode top_k={search.top_k} is smaller than the metrics' "
                     f"K={max(metrics.KS)}")
  chosen = ranking_settings.item_ranking
  if log_prior is None:
    log_prior = ranking.item_log_prior(catalogue, np.zeros(len(catalogue.item_group)),
                                       ranking_settings.item_prior_alpha)
  kmax = max(metrics.KS)
  methods = (chosen,) + tuple(m for m in ranking.ITEM_RANKINGS if m != chosen)
  sid_r, weights, kept = [], [], {}
  item_r = {m: [] for m in methods}
  bar = tqdm(batches, desc=f"decode {search.describe()}", unit="batch",
             disable=not progress or jax.process_index() != 0, leave=False)
  for local, pred, scores, valid in decode_batches(variables, model, catalogue, bar, search,
                                                   mesh=mesh, batch_sharding=batch_sharding):
    k = search.top_k  # SID level: exactly the first top_k SIDs
    sid_r.append(metrics.sid_ranks(pred[:, :k], valid[:, :k], local["target_sid"]))
    for m in methods:
      items, _ = rank_decoded(catalogue, pred, scores, valid, log_prior, kmax, m)
      item_r[m].append(ranking.item_hit_ranks(items, local["target_item"], metrics.MISS))
      if keep_items and m == chosen:
        for u, w, row in zip(local["user"], local["weight"], items):
          if w > 0:
            kept[int(u)] = [int(i) for i in row if i > 0]
    weights.append((local["weight"] > 0).astype(np.float64))  # 0 = padding row
  weights = np.concatenate(weights) if weights else np.zeros(0)
  out = {"n_users": float((weights > 0).sum())}
  levels = [("sid", sid_r), ("item", item_r[methods[0]])]
  levels += [(f"item_{m}", item_r[m]) for m in methods[1:]]
  for level, ranks in levels:
    ranks = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
    out.update({f"{level}/{k}": v for k, v in metrics.recall_ndcg(ranks, metrics.KS, weights).items()})
  if keep_items:
    out["ranked_items"] = kept
  return out
