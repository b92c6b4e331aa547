"""Semantic IDs (docs/data.md, Semantic IDs): PCA (whitened, fitted on training items) -> L2 -> OPQ + PQ.

The quantiser is faiss `OPQ{n_digit},IVF1,PQ{n_digit}x{nbits}` with inner product,
built from its parts so that small catalogues work: faiss's k-means wants >= 39 points
per centroid and warns or fails below that; we lower `min_points_per_centroid` to 1 and
require only as many training items as codes (`DataError` below that).

Collision-free mode (`sid.collision_free`): items sharing a SID keep it in id order for
the first item; each later item moves ONE digit to the closest code (in that digit's
PQ sub-space, by squared distance to the centroid) that makes its SID unused. Among all
(digit, code) pairs the one with the smallest distance increase wins, i.e. the item's
weakest digit is re-assigned to its nearest free code.
"""

import collections
import math

import numpy as np

from diffgrm_jax.data.errors import DataError


def nbits_of(codebook_size: int) -> int:
  nbits = int(round(math.log2(codebook_size))) if codebook_size > 1 else 0
  if codebook_size < 2 or 2 ** nbits != codebook_size or nbits > 16:
    raise DataError(f"sid.codebook_size={codebook_size}: must be a power of two in 2..65536 "
                    "(PQ codes have log2(codebook_size) bits).")
  return nbits


def pca(emb: np.ndarray, fit_rows: np.ndarray, dim: int, whiten: bool) -> np.ndarray:
  """Projects all rows on the top `dim` principal axes of emb[fit_rows] (float64 SVD)."""
  x = emb[fit_rows].astype(np.float64)
  mean = x.mean(0)
  _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
  dim = min(dim, vt.shape[0])
  # A deterministic sign per axis (largest-magnitude loading positive).
  signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(1)])
  vt = vt * signs[:, None]
  out = (emb.astype(np.float64) - mean) @ vt[:dim].T
  if whiten:
    std = s[:dim] / math.sqrt(max(len(x) - 1, 1))
    out /= np.maximum(std, 1e-12)
  return out


def _l2(x):
  return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def quantize(x: np.ndarray, fit_rows: np.ndarray, n_digit: int, codebook_size: int,
             threads: int) -> tuple[np.ndarray, np.ndarray]:
  """OPQ + IVF1 + PQ over x (float32 [n, dim]) trained on x[fit_rows].

  Returns (codes int32 [n, n_digit], dist float32 [n, n_digit, codebook_size]) where
  dist[i, d, c] is the squared distance of item i's digit-d sub-vector to code c.
  """
  nbits = nbits_of(codebook_size)
  n, dim = x.shape
  if dim % n_digit:
    pad = n_digit - dim % n_digit  # zero columns change no inner product
    x = np.concatenate([x, np.zeros((n, pad), np.float32)], 1)
    dim += pad
  train = np.ascontiguousarray(x[fit_rows])
  if len(train) < codebook_size:
    raise DataError(f"dataset too small: {len(train)} training items for codebooks of "
                    f"{codebook_size} codes; lower sid.codebook_size.")
  # Imported here: loading a cached SID table (e.g. on an accelerator host) needs no faiss.
  import faiss  # pylint: disable=g-import-not-at-top
  faiss.omp_set_num_threads(int(threads))
  opq = faiss.OPQMatrix(dim, n_digit)
  opq_pq = faiss.ProductQuantizer(dim, n_digit, nbits)
  opq_pq.cp.min_points_per_centroid = 1
  opq.pq = opq_pq
  quantizer = faiss.IndexFlatIP(dim)
  ivf = faiss.IndexIVFPQ(quantizer, dim, 1, n_digit, nbits, faiss.METRIC_INNER_PRODUCT)
  ivf.pq.cp.min_points_per_centroid = 1
  ivf.cp.min_points_per_centroid = 1
  index = faiss.IndexPreTransform(opq, ivf)
  index.train(train)
  xt = opq.apply(np.ascontiguousarray(x))
  resid = xt - faiss.rev_swig_ptr(quantizer.get_xb(), dim).reshape(1, dim)
  if not ivf.by_residual:
    resid = xt
  packed = ivf.pq.compute_codes(np.ascontiguousarray(resid))
  bits = np.unpackbits(packed, axis=1, bitorder="little")[:, :n_digit * nbits]
  codes = (bits.reshape(n, n_digit, nbits).astype(np.int64) << np.arange(nbits)).sum(-1)
  cents = faiss.vector_to_array(ivf.pq.centroids).reshape(n_digit, codebook_size, dim // n_digit)
  sub = resid.reshape(n, n_digit, 1, dim // n_digit)
  dist = ((sub - cents[None]) ** 2).sum(-1).astype(np.float32)
  assert (dist.argmin(-1) == codes).mean() > 0.99
  return codes.astype(np.int32), dist


def make_collision_free(codes: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, int]:
  """Re-assigns one digit of every colliding item (see module docstring). Returns (codes, moved)."""
  codes = codes.copy()
  n, n_digit = codes.shape
  if n > dist.shape[2] ** n_digit:
    raise DataError(f"{n} items cannot have unique SIDs with {dist.shape[2]}^{n_digit} codes.")
  used = {}
  for i, row in enumerate(map(tuple, codes)):
    used.setdefault(row, i)
  moved = 0
  for i in range(n):
    row = tuple(codes[i])
    if used[row] == i:
      continue
    extra = dist[i] - dist[i, np.arange(n_digit), codes[i]][:, None]  # [n_digit, K]
    for flat in np.argsort(extra, axis=None, kind="stable"):
      d, c = divmod(int(flat), dist.shape[2])
      cand = row[:d] + (c,) + row[d + 1:]
      if cand not in used:
        break
    else:  # every single-digit move is taken: take any free SID (tiny codebooks only)
      cand = next(s for s in _all_sids(dist.shape[2], n_digit) if s not in used)
    used[cand] = i
    codes[i] = cand
    moved += 1
  return codes, moved


def _all_sids(k, n_digit):
  for flat in range(k ** n_digit):
    yield tuple(int(flat // k ** (n_digit - 1 - d)) % k for d in range(n_digit))


def sid_stats(sids: np.ndarray, test_targets: np.ndarray, codebook_size: int) -> dict:
  """Statistics of a SID table sids int32 [n_items+1, n_digit] (row 0 = padding)."""
  table = sids[1:]
  counts = collections.Counter(map(tuple, table))
  groups = [c for c in counts.values() if c > 1]
  group_of = np.array([counts[tuple(r)] for r in table])
  shared = group_of[np.asarray(test_targets) - 1] > 1
  return {
      "unique_sids": len(counts),
      "collision_groups": len(groups),
      "largest_group": max(counts.values()),
      "surplus_items": int(len(table) - len(counts)),
      "codes_used_per_digit": [int(len(np.unique(table[:, d]))) for d in range(table.shape[1])],
      "codebook_size": int(codebook_size),
      "test_targets_sharing_sid": float(shared.mean()),
  }


def build_sids(emb: np.ndarray, train_items: np.ndarray, s) -> tuple[np.ndarray, dict]:
  """SID table int32 [n_items+1, n_digit] (row 0 zeros) for emb float32 [n_items, dim].

  train_items: bool [n_items+1] from protocol.training_items. s: config.sid.
  """
  fit_rows = np.flatnonzero(train_items[1:])
  x = _l2(pca(emb, fit_rows, int(s.pca_dim), bool(s.whiten)))
  codes, dist = quantize(x, fit_rows, int(s.n_digit), int(s.codebook_size), int(s.faiss_threads))
  info = {"faiss_threads": int(s.faiss_threads), "pca_dim": int(x.shape[1]),
          "collision_free_moved": 0}
  if s.collision_free:
    codes, info["collision_free_moved"] = make_collision_free(codes, dist)
  sids = np.zeros((len(codes) + 1, codes.shape[1]), np.int32)
  sids[1:] = codes
  return sids, info
