"""Synthetic catalogues and history lengths shared by the decoding benchmarks."""

import numpy as np

N_ITEMS, N_DIGIT, CODEBOOK = 18357, 4, 256


def random_sids(rng, n_items=N_ITEMS, n_unique=15542, n_groups=1313):
  """Random SID table with Sports-like collisions (15.5k unique SIDs, 1.3k groups)."""
  uniq = set()
  while len(uniq) < n_unique:
    for s in rng.integers(0, CODEBOOK, size=(n_unique, N_DIGIT)):
      uniq.add(tuple(s))
      if len(uniq) == n_unique:
        break
  uniq = np.array(sorted(uniq), np.int32)
  rng.shuffle(uniq)
  groups = rng.choice(n_unique, n_groups, replace=False)
  # Heavy-tailed group sizes: surplus items land on groups with Zipf-like weights.
  w = 1.0 / np.arange(1, n_groups + 1) ** 0.9
  extra = groups[rng.choice(n_groups, n_items - n_unique - n_groups, p=w / w.sum())]
  rows = np.concatenate([uniq, uniq[groups], uniq[extra]])[: n_items]
  rng.shuffle(rows)
  return np.concatenate([np.zeros((1, N_DIGIT), np.int32), rows])


def history_lengths(rng, n):
  """Mean ~7, ~70% <= 8, long tail up to 50 (like the Sports test histories)."""
  return np.minimum(4 + rng.geometric(0.28, size=n) - 1, 50)


def synthetic_sids(rng, n_items):
  """[n_items + 1, 4] SIDs (row 0 = padding): skewed first digit, 10% collisions."""
  sids = rng.integers(0, CODEBOOK, size=(n_items, N_DIGIT))
  sids[:, 0] = np.minimum(rng.geometric(0.02, n_items), CODEBOOK) - 1
  dup = rng.random(n_items) < 0.1
  sids[dup] = sids[rng.integers(0, n_items, dup.sum())]
  return np.concatenate([np.zeros((1, N_DIGIT), np.int64), sids])
