"""Plain readings of a `catalogue.Catalogue` that tests compare the package against.

items_of / ranked_items expand SIDs into items with simple loops over the catalogue's
collision groups; padded_tables pads the legality table so catalogues of different
sizes share one compiled decoder shape.
"""

import numpy as np

from diffgrm_jax.sid import catalogue as catalogue_lib
from diffgrm_jax.sid import legality


def items_of(cat, sid):
  """Items holding one SID, in tie order (empty if none)."""
  g = int(cat.sid_group(np.asarray(sid)[None])[0])
  return [] if g < 0 else cat.group_items[cat.group_offsets[g]:cat.group_offsets[g + 1]].tolist()


def ranked_items(cat, pred_sids, valid, k):
  """Ranked SIDs [U, K', N] -> the first k items per user (0 = none): [U, k]."""
  out = np.zeros((len(pred_sids), k), np.int32)
  for u in range(len(pred_sids)):
    items = [i for sid, ok in zip(pred_sids[u], valid[u]) if ok for i in items_of(cat, sid)]
    out[u, :min(k, len(items))] = items[:k]
  return out


def padded_tables(cat, n_keys):
  """The legality tables padded to `n_keys` keys that match no partial SID."""
  assert n_keys >= len(cat.keys)
  return catalogue_lib.LegalityTables(*pad_tables(
      cat.keys, cat.legal_offsets, cat.legal_codes, cat.n_digit, n_keys))


def pad_tables(keys, offsets, codes, n_digit, n_keys=None, n_codes=None):
  """Pads the tables to fixed sizes (one compiled shape for many catalogues) with keys
  that match no partial SID. `n_codes` defaults to 2 * N * n_keys."""
  if n_keys is None:
    return keys, offsets, codes
  n_codes = 2 * n_digit * n_keys if n_codes is None else n_codes
  if n_keys < len(keys) or n_codes < len(codes):
    raise ValueError(f"legality tables need n_keys >= {len(keys)} and n_codes >= "
                     f"{len(codes)}, got {n_keys} and {n_codes}")
  offsets = np.pad(offsets, (0, n_keys * n_digit + 1 - len(offsets)), mode="edge")  # empty rows
  keys = np.pad(keys, (0, n_keys - len(keys)), constant_values=legality.NO_KEY)
  return keys, offsets, np.pad(codes, (0, n_codes - len(codes)))

