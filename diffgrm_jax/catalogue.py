"""The catalogue of semantic IDs: key packing, legality tables, SID <-> items.

Shapes: N = n_digit, C = codebook_size.

Legality: every partial SID with at most N-1 known digits that matches a catalogue item
is a key `pattern << ((N-1)*bits) | known codes packed in digit order` (uint32;
`pattern` = bitmask of known digits, `bits` = bits per code) in one sorted table, holding
a bitset of the legal next (digit, code) pairs. One `searchsorted` per partial SID finds
its row (`legal_mask`). See docs/method.md, Legality.

SID -> items: items sharing one SID form a collision group, ordered by the tie rule
(more training occurrences first, then lower item id); item-level metrics expand ranked
SIDs into these groups (docs/method.md, Metrics).
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def _bits_per_code(codebook_size):
  return max(1, int(np.ceil(np.log2(codebook_size))))


def pack_partial_key(codes, known, bits, xp=np):
  """Key of a partial SID with at most N-1 known digits.

  codes: int [..., N]; known: bool [..., N] -> uint32 [...]. Unknown digits are ignored.
  """
  n = codes.shape[-1]
  known_i = known.astype(xp.uint32)
  pattern = (known_i << xp.arange(n, dtype=xp.uint32)).sum(-1, dtype=xp.uint32)
  rank = xp.cumsum(known_i, axis=-1, dtype=xp.uint32) - known_i  # slot of each known digit
  packed = xp.where(known, codes.astype(xp.uint32) << (rank * xp.uint32(bits)), xp.uint32(0))
  packed = packed.sum(-1, dtype=xp.uint32)
  return (pattern << xp.uint32((n - 1) * bits)) | packed


def pack_full_key(codes, bits, xp=np):
  """Key of a complete SID: codes int [..., N] -> uint32 [...] (N * bits <= 32)."""
  n = codes.shape[-1]
  shifts = xp.arange(n, dtype=xp.uint32) * xp.uint32(bits)
  return (codes.astype(xp.uint32) << shifts).sum(-1, dtype=xp.uint32)


class LegalityTables(NamedTuple):
  """Device-side legality structure (a pytree, passed to the jitted decoder)."""
  keys: jax.Array  # uint32 [n_keys], sorted partial-SID keys
  bits: jax.Array  # uint32 [n_keys, ceil(N*C/32)], bit d*C + c = (digit d, code c) legal


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
  keys: np.ndarray  # uint32 [n_keys]
  bitsets: np.ndarray  # uint32 [n_keys, words]
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
    bits = _bits_per_code(c)
    if n * bits > 32 or (n - 1) * bits + n > 32:
      raise ValueError(f"n_digit={n} with codebook_size={c} does not fit 32-bit SID keys")
    items = sids[1:]
    if items.size and (items.min() < 0 or items.max() >= c):
      raise ValueError(f"SID codes must lie in [0, {c}); got [{items.min()}, {items.max()}]")
    uniq = np.unique(items, axis=0)
    # Partial keys: every pattern with < N known digits, every unique SID.
    key_parts, pos_parts = [], []
    for pattern in range(2 ** n - 1):
      known = ((pattern >> np.arange(n)) & 1).astype(bool)
      keys_p = pack_partial_key(uniq, np.broadcast_to(known, uniq.shape), bits)
      for d in np.flatnonzero(~known):
        key_parts.append(keys_p)
        pos_parts.append(d * c + uniq[:, d])
    all_keys = np.concatenate(key_parts) if key_parts else np.zeros(0, np.uint32)
    all_pos = np.concatenate(pos_parts) if pos_parts else np.zeros(0, np.int64)
    keys, inv = np.unique(all_keys, return_inverse=True)
    words = -(-n * c // 32)
    bitsets = np.zeros((max(len(keys), 1), words), np.uint32)
    np.bitwise_or.at(bitsets, (inv, all_pos >> 5), (np.uint32(1) << (all_pos & 31).astype(np.uint32)))
    if not len(keys):  # empty catalogue: one key that matches nothing useful
      keys = np.array([np.uint32(0xFFFFFFFF)], np.uint32)

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
    return cls(n, c, bits, keys.astype(np.uint32), bitsets, group_keys.astype(np.uint32),
               group_sids, offsets, group_items, item_group, item_rank)

  @property
  def n_sids(self):
    return len(self.group_keys)

  def tables(self):
    """Device arrays of the legality table, for decoding and likelihood scoring."""
    return LegalityTables(jnp.asarray(self.keys), jnp.asarray(self.bitsets))

  def sid_group(self, sids):
    """sids: int [..., N] -> group index int [...] (-1 where no item has that SID)."""
    sids = np.asarray(sids)
    key = pack_full_key(sids, self.bits)
    idx = np.clip(np.searchsorted(self.group_keys, key), 0, max(self.n_sids - 1, 0))
    ok = (self.n_sids > 0) & (self.group_keys[idx] == key) if self.n_sids else np.zeros(key.shape, bool)
    return np.where(ok, idx, -1).astype(np.int32)


def legal_mask(tables, codes, known, n_digit, codebook_size):
  """Legal next (digit, code) pairs of partial SIDs: codes/known [..., N] -> bool [..., N, C]."""
  bits = _bits_per_code(codebook_size)
  key = pack_partial_key(codes, known, bits, xp=jnp)
  idx = jnp.clip(jnp.searchsorted(tables.keys, key), 0, tables.keys.shape[0] - 1)
  found = tables.keys[idx] == key
  rows = tables.bits[idx]  # [..., words]
  pos = np.arange(n_digit * codebook_size)
  word = jnp.take(rows, jnp.asarray(pos >> 5), axis=-1)
  bit = (word >> jnp.asarray((pos & 31).astype(np.uint32))) & jnp.uint32(1)
  ok = (bit == 1) & found[..., None]
  return ok.reshape(*codes.shape[:-1], n_digit, codebook_size)
