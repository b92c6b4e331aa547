"""The dense form of the legality table: a bitset of N*C bits per partial-SID key.

The reference that tests check `sid/legality.py`'s sparse table against, and the baseline
of benchmarks/bench_catalogue.py; about ten times the sparse table's memory.
"""

import jax.numpy as jnp
import numpy as np

from diffgrm_jax.sid import legality


def build_dense(uniq, codebook_size):
  """Sorted keys [K] and a bitset
  of N*C bits per key, bit d*C + c = (digit d, code c) legal: uint32 [K, ceil(N*C/32)]."""
  uniq = np.asarray(uniq, np.int64)
  n, c = uniq.shape[1], int(codebook_size)
  bits = legality.check_key_width(n, c)
  key_parts, pos_parts = [], []
  for pattern in range(2 ** n - 1):
    known = ((pattern >> np.arange(n)) & 1).astype(bool)
    keys_p = legality.pack_partial_key(uniq, np.broadcast_to(known, uniq.shape), bits)
    for d in np.flatnonzero(~known):
      key_parts.append(keys_p)
      pos_parts.append(d * c + uniq[:, d])
  keys, inv = np.unique(np.concatenate(key_parts), return_inverse=True)
  pos = np.concatenate(pos_parts)
  bitsets = np.zeros((max(len(keys), 1), -(-n * c // 32)), np.uint32)
  np.bitwise_or.at(bitsets, (inv, pos >> 5), np.uint32(1) << (pos & 31).astype(np.uint32))
  if not len(keys):
    keys = np.array([legality.NO_KEY], np.uint32)
  return keys.astype(np.uint32), bitsets


def dense_legal_mask(keys, bitsets, codes, known, n_digit, codebook_size):
  """`legal_mask` on the dense tables of `build_dense`."""
  key = legality.pack_partial_key(codes, known, legality.bits_per_code(codebook_size), xp=jnp)
  idx = jnp.clip(jnp.searchsorted(keys, key), 0, keys.shape[0] - 1)
  found = keys[idx] == key
  pos = np.arange(n_digit * codebook_size)
  word = jnp.take(bitsets[idx], jnp.asarray(pos >> 5), axis=-1)
  bit = (word >> jnp.asarray((pos & 31).astype(np.uint32))) & jnp.uint32(1)
  ok = (bit == 1).reshape(*codes.shape[:-1], n_digit, codebook_size)
  return ok & found[..., None, None] & ~known[..., None]
