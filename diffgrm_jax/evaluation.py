"""Decode every user of a split and compute SID- and item-level Recall/NDCG@{5,10}.

The same code runs on one CPU and on a multi-host mesh: with `batch_sharding`, each
process feeds its local rows, the decoder runs on global arrays, and outputs are
gathered so that every process computes the same metrics.
"""

import functools

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from diffgrm_jax import decoding
from diffgrm_jax import metrics


@functools.lru_cache(maxsize=8)
def _jitted_decoder(model, catalogue, settings):
  dec = decoding.make_decoder(model, catalogue, settings)
  return jax.jit(dec.apply), dec.tables


def compiled_decoder(model, catalogue, settings, mesh=None):
  """Cached `(fn, tables)`: `fn(variables, tables, hist_sids, hist_mask)` is the jitted
  `decoding.Decoder.apply` (compiled once per input shape), `tables` its legality tables
  (replicated over `mesh` when given). The cache key is (model, catalogue, settings):
  `settings` (a frozen `decoding.DecodeSettings`) names every decoding choice."""
  fn, tables = _jitted_decoder(model, catalogue, settings)
  if mesh is not None:
    tables = jax.device_put(tables, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  return fn, tables


def evaluate(variables, model, catalogue, batches, settings, *, mesh=None, batch_sharding=None,
             progress=True):
  """Decodes `batches` with `settings` (a `decoding.DecodeSettings`) and returns metrics as
  Python floats.

  batches: iterable of numpy dicts with 'hist_sids' [b, Lb, N] int32, 'hist_mask'
  [b, Lb] bool, 'target_sid' [b, N], 'target_item' [b], 'weight' [b] (0 = padding row)
  and 'user' [b] (-1 = padding); with `batch_sharding` these are this process's rows.
  Returns {'sid/recall@5', 'sid/ndcg@5', 'sid/recall@10', 'sid/ndcg@10', 'item/...',
  'n_users'}. `progress` shows a tqdm bar (process 0 only).
  """
  if settings.top_k < max(metrics.KS):
    raise ValueError(f"decode top_k={settings.top_k} is smaller than the metrics' "
                     f"K={max(metrics.KS)}")
  fn, tables = compiled_decoder(model, catalogue, settings, mesh)
  sid_r, item_r, weights = [], [], []
  bar = tqdm(batches, desc=f"decode {settings.describe()}", unit="batch",
             disable=not progress or jax.process_index() != 0, leave=False)
  for batch in bar:
    hist, mask = np.asarray(batch["hist_sids"], np.int32), np.asarray(batch["hist_mask"], bool)
    if batch_sharding is not None:
      hist = jax.make_array_from_process_local_data(batch_sharding, hist)
      mask = jax.make_array_from_process_local_data(batch_sharding, mask)
    pred, _, valid = fn(variables, tables, hist, mask)
    local = {k: np.asarray(batch[k]) for k in ("target_sid", "target_item", "weight")}
    if batch_sharding is not None:
      pred, valid = multihost_utils.process_allgather((pred, valid), tiled=True)
      local = multihost_utils.process_allgather(local, tiled=True)
    pred, valid = np.asarray(pred), np.asarray(valid)
    sid_r.append(metrics.sid_ranks(pred, valid, local["target_sid"]))
    groups = np.where(valid, catalogue.sid_group(pred), -1)
    item_r.append(metrics.item_ranks(groups, np.diff(catalogue.group_offsets),
                                     local["target_item"], catalogue.item_group,
                                     catalogue.item_rank_in_group))
    weights.append((local["weight"] > 0).astype(np.float64))  # 0 = padding row
  weights = np.concatenate(weights) if weights else np.zeros(0)
  out = {"n_users": float((weights > 0).sum())}
  for level, ranks in (("sid", sid_r), ("item", item_r)):
    ranks = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
    out.update({f"{level}/{k}": v for k, v in metrics.recall_ndcg(ranks, metrics.KS, weights).items()})
  return out
