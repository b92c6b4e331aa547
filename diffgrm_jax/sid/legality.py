"""Legality of partial semantic IDs: which next (digit, code) pairs keep a catalogue item reachable.

Shapes: N = n_digit, C = codebook_size, S = unique SIDs in the catalogue.

A partial SID is a set of known digits with their codes. Its key (uint32) is
`pattern << ((N-1)*bits) | known codes packed in digit order`, where `pattern` is the
bitmask of known digits and `bits` the bits per code; it covers every partial with at
most N-1 known digits (a complete SID uses `pack_full_key`).

The structure is sparse (compressed rows): one sorted table of the keys of every partial
that some catalogue item matches, and for each (key, still-masked digit d) one row of a
flat array of codes (uint8 for C <= 256), located by an offsets array. A row holds
either the sorted list of the legal codes of d (at most 8 of them for C <= 1024) or,
for more, a C-bit bitset (32 bytes for C = 256); the row's length tells which (a list is
always shorter). No row takes more than 4 entries per legal code, so the size stays
linear in the catalogue: for N = 4 about 8 keys, 16 offsets and ~35 code bytes per
unique SID once the catalogue is large (~100 bytes per SID; 2M SIDs take ~0.2 GB),
against a dense bitset of N*C bits per key (~1 KB per SID;
`diffgrm_jax/analysis/dense_legality.py` keeps that form as a reference).

A lookup (`legal_mask`) costs one `searchsorted` per partial and, per digit, one gather
of two offsets and one of a bitset's width of entries; a list's codes (at most 8) are
scattered into the mask, a bitset's bits read in place, so no lookup touches C entries
per digit. The work per partial depends on the catalogue's size only through the binary search's
depth.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NO_KEY = np.uint32(0xFFFFFFFF)  # above every real key (pattern < 2^N - 1)


def bits_per_code(codebook_size):
  return max(1, int(np.ceil(np.log2(codebook_size))))


def check_key_width(n_digit, codebook_size):
  bits = bits_per_code(codebook_size)
  if n_digit * bits > 32 or (n_digit - 1) * bits + n_digit > 32:
    raise ValueError(f"n_digit={n_digit} with codebook_size={codebook_size} does not fit "
                     "32-bit SID keys")
  return bits


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
  keys: jax.Array  # uint32 [K], sorted partial-SID keys
  offsets: jax.Array  # int32 [K*N + 1]; codes of (key k, digit d): codes[off[k*N+d]:off[k*N+d+1]]
  codes: jax.Array  # uint8 (uint16 / int32 for larger codebooks) [M]: per row a sorted list or a bitset


def _code_dtype(codebook_size):
  return np.uint8 if codebook_size <= 256 else np.uint16 if codebook_size <= 65536 else np.int32


def bitset_width(codebook_size):
  """Entries of the code dtype that hold one C-bit bitset (bit c in entry c // b, b the
  dtype's bits). A row's length equals it exactly when the row is a bitset."""
  bits = np.dtype(_code_dtype(codebook_size)).itemsize * 8
  return -(-int(codebook_size) // bits)


# Longest code list a row keeps (for C <= 1024); a row with more legal codes stores the
# bitset (32 bytes for C = 256). Short lists keep the lookup's scatter small (8 codes per
# digit); few rows have 9 to 31 codes, so storing those as bitsets costs little memory
# (benchmarks/results/speed.md, "Dropout words from a counter hash, GELU through erf,
# legality rows as lists or bitsets").
LIST_MAX = 8


def list_max(codebook_size):
  """Most codes a row stores as a list: LIST_MAX, or a quarter of the bitset's width for
  wide codebooks, so that a bitset row never takes more than 4 entries per code."""
  return max(LIST_MAX, -(-bitset_width(codebook_size) // 4))


def _rows(entries, n_rows, codebook_size):
  """Sorted unique flat entries row * C + code -> (offsets, codes) with one row each: the
  code list, or the bitset when the row has more than `list_max` codes (or at least
  `bitset_width`, so that a list is always shorter than a bitset)."""
  c = int(codebook_size)
  dtype = np.dtype(_code_dtype(c))
  width, bits = bitset_width(c), dtype.itemsize * 8
  row, code = entries // c, entries % c
  counts = np.bincount(row, minlength=n_rows)
  as_bitset = counts >= min(width, list_max(c) + 1)
  offsets = np.concatenate([[0], np.cumsum(np.where(as_bitset, width, counts))])
  if offsets[-1] >= 2 ** 31:
    raise ValueError(f"catalogue too large for 32-bit legality offsets ({offsets[-1]} entries)")
  out = np.zeros(offsets[-1], np.uint64)
  first = np.concatenate([[0], np.cumsum(counts)])[:-1]  # each row's first entry
  listed = ~as_bitset[row]
  out[(offsets[row] + np.arange(len(entries)) - first[row])[listed]] = code[listed]
  # Bitset rows: codes are sorted and distinct, so the bits of one entry are consecutive
  # codes and their sum is their OR.
  pos = (offsets[row] + code // bits)[~listed]
  if len(pos):
    starts = np.flatnonzero(np.concatenate([[True], pos[1:] != pos[:-1]]))
    out[pos[starts]] = np.add.reduceat(np.uint64(1) << (code[~listed] % bits).astype(np.uint64),
                                       starts)
  unsigned = np.dtype(f"uint{bits}")
  return offsets.astype(np.int32), out.astype(unsigned).view(dtype)


def _sorted_unique(x):
  # Sort-based: np.unique's hash path is several times slower on millions of int64.
  x = np.sort(x)
  return x[np.concatenate([[True], x[1:] != x[:-1]])] if len(x) else x


def build(uniq, codebook_size):
  """Sparse tables (numpy) of unique SIDs uniq: int [S, N] -> (keys, offsets, codes)."""
  uniq = np.asarray(uniq, np.int64)
  n, c = uniq.shape[1], int(codebook_size)
  bits = check_key_width(n, c)
  # Keys of pattern p form one contiguous block of the sorted table (the pattern is the
  # high bits), so each pattern is uniqued alone and its blocks are concatenated in order.
  key_blocks, entry_blocks, start = [], [], 0
  for p in range(2 ** n - 1):
    known = ((p >> np.arange(n)) & 1).astype(bool)
    kp, inv = np.unique(pack_partial_key(uniq, np.broadcast_to(known, uniq.shape), bits),
                        return_inverse=True)
    row = (start + inv.reshape(-1).astype(np.int64)) * n
    # One entry per distinct (key, masked digit, code): the flat index (key*N + d)*C + code.
    entry_blocks.append(_sorted_unique(np.concatenate(
        [(row + d) * c + uniq[:, d] for d in np.flatnonzero(~known)])))
    key_blocks.append(kp)
    start += len(kp)
  keys = np.concatenate(key_blocks) if len(uniq) else np.zeros(0, np.uint32)
  entries = np.concatenate(entry_blocks) if len(uniq) else np.zeros(0, np.int64)
  offsets, codes = _rows(entries, len(keys) * n, c)
  if not len(keys):  # empty catalogue: one key that matches nothing
    keys, offsets = np.array([NO_KEY], np.uint32), np.zeros(n + 1, np.int32)
  if not len(codes):
    codes = np.zeros(1, _code_dtype(c))
  return keys.astype(np.uint32), offsets, codes


def legal_mask(tables, codes, known, n_digit, codebook_size, digits=None):
  """Legal next (digit, code) pairs of partial SIDs: codes/known [..., N] -> bool [..., N, C];
  with `digits` int [..., M], those digits' rows only: bool [..., M, C].

  Known digits have no legal next code (all False). Partials with all N digits known
  are outside the contract (their key format is that of N-1 known digits).
  """
  with jax.named_scope("legality"):  # names its operations in profiles
    n, c = n_digit, codebook_size
    bits = bits_per_code(c)
    key = pack_partial_key(codes, known, bits, xp=jnp)
    n_keys = tables.keys.shape[0]
    idx = jnp.clip(jnp.searchsorted(tables.keys, key), 0, n_keys - 1)
    found = tables.keys[idx] == key
    if digits is None:
      digits = jnp.broadcast_to(jnp.arange(n), known.shape)
    row = idx[..., None] * n + digits  # [..., M]
    lo = tables.offsets[row]
    masked = ~jnp.take_along_axis(known, digits, axis=-1)
    length = jnp.where(found[..., None] & masked, tables.offsets[row + 1] - lo, 0)
    width = bitset_width(c)
    entry_bits = tables.codes.dtype.itemsize * 8
    src = jnp.minimum(lo[..., None] + jnp.arange(width), tables.codes.shape[0] - 1)
    raw = tables.codes[src].astype(jnp.uint32)  # [..., N, width]
    # List rows: scatter the listed codes into a row of C + 1 (column C takes the slots past
    # the list's end). A scatter's result is materialised, so its work is done once per
    # row; expressions fused into the mask's consumers are recomputed per element.
    listed = raw[..., :min(width, list_max(c))].astype(jnp.int32)
    listed = jnp.where(jnp.arange(listed.shape[-1]) < length[..., None], listed, c)
    flat = listed.reshape(-1, listed.shape[-1])
    from_list = jnp.zeros((flat.shape[0], c + 1), bool).at[
        jnp.arange(flat.shape[0])[:, None], flat].set(True)
    from_list = from_list[:, :c].reshape(*digits.shape, c)
    # Bitset rows: bit j of the row is bit j % b of its entry j // b.
    j = np.arange(c)
    entry = raw[..., j // entry_bits]  # [..., M, C]
    from_bitset = (entry >> jnp.asarray((j % entry_bits).astype(np.uint32))) & np.uint32(1)
    return jnp.where((length == width)[..., None], from_bitset == 1, from_list)
