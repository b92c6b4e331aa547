"""The catalogue of semantic IDs: legality tables and SID <-> items.

Shapes: N = n_digit, C = codebook_size.

Legality (built and looked up by `legality.py`): every partial SID with at most N-1 known
digits that matches a catalogue item is a key in one sorted table, with the legal next
codes of each still-masked digit stored sparsely (memory linear in the catalogue). One
`searchsorted` per partial SID finds its row (`legal_mask`). See docs/method.md, Legality.

SID -> items: items sharing one SID form a collision group, ordered by the tie rule
(more training occurrences first, then lower item id); item-level metrics rank the items
of the decoded SIDs (docs/method.md, Metrics).
"""

import dataclasses

import jax.numpy as jnp
import numpy as np

from diffgrm_jax.sid import legality
from diffgrm_jax.sid.legality import LegalityTables
from diffgrm_jax.sid.legality import pack_full_key
from diffgrm_jax.sid.legality import pack_partial_key

__all__ = ["Catalogue", "LegalityTables", "legal_mask", "pack_full_key", "pack_partial_key"]


@dataclasses.dataclass(frozen=True, eq=False)
class Catalogue:
  """Catalogue of SIDs: legality table for decoding and SID -> items for metrics.

  Collision groups (items sharing one SID) are ordered by the tie rule: more
  occurrences in `item_popularity` first (e.g. training counts), then lower item id.
  Without popularity the order is by item id.
  """
  n_digit: int
  codebook_size: int
  bits: int
  keys: np.ndarray  # uint32 [n_keys], sorted partial-SID keys (legality.py)
  legal_offsets: np.ndarray  # int32 [n_keys * N + 1], rows of legal_codes per (key, digit)
  legal_codes: np.ndarray  # uint8 [M], legal next codes
  group_keys: np.ndarray  # uint32 [G] sorted full-SID keys, one per unique SID
  group_sids: np.ndarray  # int32 [G, N]
  group_offsets: np.ndarray  # int64 [G + 1]; items of group g: group_items[off[g]:off[g+1]]
  group_items: np.ndarray  # int32 [n_items] in tie order within each group
  item_group: np.ndarray  # int32 [n_items + 1]; -1 for the padding row 0
  item_rank_in_group: np.ndarray  # int32 [n_items + 1]; position of the item in its group

  @classmethod
  def from_sids(cls, sids, codebook_size, item_popularity=None):
    """sids: int [n_items + 1, N] (row 0 = padding, ignored); item_popularity: [n_items + 1]."""
    sids = np.asarray(sids, np.int64)
    n_rows, n = sids.shape
    c = int(codebook_size)
    bits = legality.check_key_width(n, c)
    items = sids[1:]
    if items.size and (items.min() < 0 or items.max() >= c):
      raise ValueError(f"SID codes must lie in [0, {c}); got [{items.min()}, {items.max()}]")
    keys, legal_offsets, legal_codes = legality.build(np.unique(items, axis=0), c)

    # SID -> items, tie order inside a group: popularity desc, then item id asc.
    item_ids = np.arange(1, n_rows)
    full = pack_full_key(items, bits)
    pop = (np.zeros(n_rows) if item_popularity is None
           else np.asarray(item_popularity, np.float64))
    order = np.lexsort((item_ids, -pop[1:], full))
    group_keys, starts = np.unique(full[order], return_index=True)
    offsets = np.append(starts, len(order)).astype(np.int64)
    group_items = item_ids[order].astype(np.int32)
    sizes = np.diff(offsets)
    item_group = np.full(n_rows, -1, np.int32)
    item_group[group_items] = np.repeat(np.arange(len(group_keys)), sizes)
    item_rank = np.zeros(n_rows, np.int32)
    item_rank[group_items] = np.arange(len(order)) - np.repeat(starts, sizes)
    group_sids = items[order][starts].astype(np.int32) if len(order) else np.zeros((0, n), np.int32)
    return cls(n, c, bits, keys, legal_offsets, legal_codes, group_keys.astype(np.uint32),
               group_sids, offsets, group_items, item_group, item_rank)

  @property
  def n_sids(self):
    return len(self.group_keys)

  def tables(self):
    """Device arrays of the legality table, for decoding and likelihood scoring."""
    return LegalityTables(*map(jnp.asarray, (self.keys, self.legal_offsets, self.legal_codes)))

  def sid_group(self, sids):
    """sids: int [..., N] -> group index int [...] (-1 where no item has that SID)."""
    sids = np.asarray(sids)
    key = pack_full_key(sids, self.bits)
    idx = np.clip(np.searchsorted(self.group_keys, key), 0, max(self.n_sids - 1, 0))
    ok = (self.n_sids > 0) & (self.group_keys[idx] == key) if self.n_sids else np.zeros(key.shape, bool)
    return np.where(ok, idx, -1).astype(np.int32)


def legal_mask(tables, codes, known, n_digit, codebook_size, digits=None):
  """Legal next (digit, code) pairs of partial SIDs: codes/known [..., N] -> bool [..., N, C]
  (with `digits` int [..., M]: those digits only, [..., M, C])."""
  return legality.legal_mask(tables, codes, known, n_digit, codebook_size, digits)
