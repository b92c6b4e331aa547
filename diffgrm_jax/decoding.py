"""Beam-search decoding of semantic IDs and the catalogue's legality structure.

Shapes: B = users, W = beams per user, N = n_digit, C = codebook_size, K = top_k.

Every strategy is one jitted function: the encoder runs once per user, step 0 (all
beams share the all-masked input) runs once per user with one beam, and the remaining
N - 1 fill steps are a `lax.scan` whose carry is W beams per user. Scores are sums of
per-step log-probabilities: `log_softmax` over the filled digit's C codes (normalised
over all C codes), with extensions that no catalogue item matches set to -inf, so an
illegal partial SID is pruned the step it would appear, whatever the fill order.

Strategies (SPEC §5):
  left_to_right  digits 0, 1, .., N-1; beam width `step_beams[t]` after step t.
  random         one digit order drawn from `order_seed` for the whole run; widths as above.
  confidence     (paper's CPD) every (beam, still-masked digit, code) triple competes in
                 one global top-W; `greedy_last` fills the last digit by argmax per beam
                 (the released code) instead.

Fixed-order strategies carry max(step_beams) beams in the scan; steps with a smaller
width keep the surplus beams at -inf (padding beams cost decoder compute, not results).

De-duplication (confidence): beams that reach the same partial SID by different fill
orders are *merged*: only the copy with the best score survives. Because a step's
log-probabilities depend only on the partial SID (not on the path), this is an exact
dynamic programme: a partial's score is the best over all fill orders that reach it.
The merge looks at the best W * N candidates, which is enough for exactness (a partial
with n known digits has at most n parents, n <= N). Fixed orders cannot produce
duplicates. Finished SIDs are therefore unique.

Scores normalise each step over all C codes, as the released code does. With
`renormalize` they normalise over the legal codes only, so a beam's score is the chain
log-probability among catalogue SIDs: probability mass on codes that lead to no item,
which differs between beams, then no longer lowers a beam's score.

Legality (`Catalogue`, built and looked up by `legality.py`): every partial SID with at
most N-1 known digits that matches a catalogue item is a key in one sorted table, with
the legal next codes of each still-masked digit stored sparsely. One `searchsorted` per
beam per step finds a beam's row; memory grows linearly with the catalogue.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from diffgrm_jax import legality
from diffgrm_jax.legality import LegalityTables, pack_full_key, pack_partial_key  # noqa: F401
from diffgrm_jax.model import DiffGRM

STRATEGIES = ("left_to_right", "confidence", "random")


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

  def tables(self, n_keys=None):
    """Device arrays for decoding; `n_keys` pads the table (one compiled shape for many
    catalogues) with keys that match no partial SID."""
    return LegalityTables(*map(jnp.asarray, legality.pad(
        self.keys, self.legal_offsets, self.legal_codes, self.n_digit, n_keys)))

  def sid_group(self, sids):
    """sids: int [..., N] -> group index int [...] (-1 where no item has that SID)."""
    sids = np.asarray(sids)
    key = pack_full_key(sids, self.bits)
    idx = np.clip(np.searchsorted(self.group_keys, key), 0, max(self.n_sids - 1, 0))
    ok = (self.n_sids > 0) & (self.group_keys[idx] == key) if self.n_sids else np.zeros(key.shape, bool)
    return np.where(ok, idx, -1).astype(np.int32)

  def items_of(self, sid):
    """Items holding one SID, in tie order (empty if none)."""
    g = int(self.sid_group(np.asarray(sid)[None])[0])
    return [] if g < 0 else self.group_items[self.group_offsets[g]:self.group_offsets[g + 1]].tolist()

  def ranked_items(self, pred_sids, valid, k):
    """Expands ranked SIDs [U, K', N] into the first k items per user (0 = none): [U, k]."""
    groups = np.where(valid, self.sid_group(pred_sids), -1)
    sizes = np.where(groups >= 0, np.diff(self.group_offsets)[np.maximum(groups, 0)], 0)
    start = np.cumsum(sizes, axis=1) - sizes  # first output slot of each ranked SID
    out = np.zeros((len(groups), k), np.int32)
    slot = np.arange(k)
    for r in range(groups.shape[1]):  # loop over ranks (K'), vectorised over users
      j = slot[None, :] - start[:, r:r + 1]
      take = (j >= 0) & (j < sizes[:, r:r + 1])
      src = self.group_offsets[np.maximum(groups[:, r], 0)][:, None] + np.where(take, j, 0)
      out = np.where(take, self.group_items[np.minimum(src, len(self.group_items) - 1)], out)
    return out


def legal_mask(tables, codes, known, n_digit, codebook_size):
  """Legal next (digit, code) pairs of partial SIDs: codes/known [..., N] -> bool [..., N, C]."""
  return legality.legal_mask(tables, codes, known, n_digit, codebook_size)


def _top_k_padded(x, k):
  """Top-k along the last axis; k may exceed its size (padded with -inf / index 0)."""
  size = x.shape[-1]
  vals, idx = jax.lax.top_k(x, min(k, size))
  if k > size:
    pad = [(0, 0)] * (x.ndim - 1) + [(0, k - size)]
    vals = jnp.pad(vals, pad, constant_values=-jnp.inf)
    idx = jnp.pad(idx, pad)
  return vals, idx


def _gather_beams(x, parent):
  """x: [B, W, ...], parent: int [B, M] -> [B, M, ...]."""
  return jnp.take_along_axis(x, parent.reshape(parent.shape + (1,) * (x.ndim - 2)), axis=1)


@dataclasses.dataclass(frozen=True, eq=False)
class Decoder:
  """Decoder for one strategy; call it as `decoder(variables, hist_sids, hist_mask)`.

  `apply(variables, tables, hist_sids, hist_mask)` is the same function with the legality
  tables passed explicitly (use it under your own `jax.jit` with shardings).
  Returns pred_sids int32 [B, K, N], scores float32 [B, K] (best first), valid bool [B, K].
  """
  model: DiffGRM
  catalogue: Catalogue
  strategy: str
  widths: tuple  # beams kept after each fill step
  order: tuple  # digit filled at each step (fixed-order strategies)
  top_k: int
  greedy_last: bool
  renormalize: bool = False

  def __post_init__(self):
    # Built eagerly: under an outer jit they are concrete arrays, not tracers.
    object.__setattr__(self, "tables", self.catalogue.tables())

  def __call__(self, variables, hist_sids, hist_mask):
    return self.apply(variables, self.tables, hist_sids, hist_mask)

  def apply(self, variables, tables, hist_sids, hist_mask):
    model, n, c = self.model, self.model.n_digit, self.model.codebook_size
    enc = model.apply(variables, hist_sids, hist_mask, method=DiffGRM.encode)
    b = hist_sids.shape[0]

    def legal_log_probs(codes, known):  # [B, W, N] -> [B, W, N, C], -inf at illegal codes
      logits = model.apply(variables, enc, hist_mask, codes, known, method=DiffGRM.decode)
      ok = legal_mask(tables, codes, known, n, c)
      if self.renormalize:
        logits = jnp.where(ok, logits, -jnp.inf)
      # A (beam, digit) with no legal code (e.g. a known digit) stays all -inf, not NaN.
      return jnp.where(ok, jax.nn.log_softmax(logits, axis=-1), -jnp.inf)

    zeros = jnp.zeros((b, 1, n), jnp.int32)
    none = jnp.zeros((b, 1, n), bool)
    s0 = legal_log_probs(zeros, none)[:, 0]  # step 0, once per user: [B, N, C]
    if self.strategy == "confidence":
      codes, scores = self._confidence(legal_log_probs, s0)
    else:
      codes, scores = self._fixed_order(legal_log_probs, s0)
    scores, idx = _top_k_padded(scores, self.top_k)
    pred = _gather_beams(codes, idx)
    valid = scores > -jnp.inf
    return jnp.where(valid[..., None], pred, 0).astype(jnp.int32), scores, valid

  def _fixed_order(self, legal_log_probs, s0):
    n, c = self.model.n_digit, self.model.codebook_size
    order, widths = np.asarray(self.order), np.asarray(self.widths)
    w = int(widths.max())
    b = s0.shape[0]
    scores, code0 = _top_k_padded(s0[:, order[0]], min(int(widths[0]), c))
    scores, code0 = _top_k_padded(scores, w)[0], jnp.pad(code0, ((0, 0), (0, max(0, w - code0.shape[1]))))
    digit_oh = jnp.arange(n) == order[0]
    codes = jnp.where(digit_oh, code0[..., None], 0).astype(jnp.int32)  # [B, W, N]
    known_before = np.stack([np.isin(np.arange(n), order[:t]) for t in range(n)])

    def step(carry, xs):
      codes, scores = carry
      digit, known_t, width = xs
      known = jnp.broadcast_to(known_t, codes.shape)
      cand = scores[..., None] + jnp.take(legal_log_probs(codes, known), digit, axis=2)  # [B, W, C]
      top, idx = jax.lax.top_k(cand.reshape(b, w * c), w)
      top = jnp.where(jnp.arange(w) < width, top, -jnp.inf)
      parent, code = idx // c, idx % c
      new = jnp.where(jnp.arange(n) == digit, code[..., None], _gather_beams(codes, parent))
      return (new.astype(jnp.int32), top), None

    xs = (jnp.asarray(order[1:]), jnp.asarray(known_before[1:]), jnp.asarray(widths[1:]))
    (codes, scores), _ = jax.lax.scan(step, (codes, scores), xs)
    return codes, scores

  def _confidence(self, legal_log_probs, s0):
    n, c = self.model.n_digit, self.model.codebook_size
    bits = self.catalogue.bits
    w = self.widths[0]
    b = s0.shape[0]
    scores, idx = _top_k_padded(s0.reshape(b, n * c), w)
    digit, code = idx // c, idx % c
    known = jnp.arange(n) == digit[..., None]  # [B, W, N]
    codes = jnp.where(known, code[..., None], 0).astype(jnp.int32)
    m = min(w * n * c, w * n)  # enough candidates for an exact merge (see module doc)

    def step(carry, t):
      codes, known, scores = carry
      lp = jnp.where(known[..., None], -jnp.inf, legal_log_probs(codes, known))
      cand = scores[..., None, None] + lp
      cand = cand.reshape(b, w, n * c)
      if self.greedy_last:  # the release: the last digit is each beam's argmax
        best = jnp.argmax(cand, axis=-1)
        keep = (t < n - 1) | (jnp.arange(n * c) == best[..., None])
        cand = jnp.where(keep, cand, -jnp.inf)
      top, idx = jax.lax.top_k(cand.reshape(b, w * n * c), m)
      parent, digit, code = idx // (n * c), (idx // c) % n, idx % c
      is_d = jnp.arange(n) == digit[..., None]
      new_codes = jnp.where(is_d, code[..., None], _gather_beams(codes, parent)).astype(jnp.int32)
      new_known = is_d | _gather_beams(known, parent)
      key = jnp.where(t == n - 1, pack_full_key(new_codes, bits, xp=jnp),
                      pack_partial_key(new_codes, new_known, bits, xp=jnp))
      # Merge: sort by (key, -score); all but the first of each key drop to -inf.
      key_s, neg_s, perm = jax.lax.sort(
          (key, -top, jnp.broadcast_to(jnp.arange(m), key.shape)), dimension=-1, num_keys=2)
      dup = jnp.concatenate([jnp.zeros((b, 1), bool), key_s[:, 1:] == key_s[:, :-1]], axis=-1)
      merged = jnp.where(dup, -jnp.inf, -neg_s)
      top_w, sel = _top_k_padded(merged, w)
      src = jnp.take_along_axis(perm, sel, axis=-1)
      return (_gather_beams(new_codes, src), _gather_beams(new_known, src), top_w), None

    (codes, _, scores), _ = jax.lax.scan(step, (codes, known, scores), jnp.arange(1, n))
    return codes, scores


def digit_order(strategy, n_digit, order_seed=42):
  """Fill order of the fixed-order strategies (confidence has none: returns range(N))."""
  if strategy == "random":
    return tuple(int(d) for d in np.random.default_rng(order_seed).permutation(n_digit))
  return tuple(range(n_digit))


def make_decoder(model, catalogue, *, strategy, beam, step_beams=None, top_k=10,
                 greedy_last=False, order_seed=42, renormalize=False):
  """Builds `fn(variables, hist_sids, hist_mask) -> (pred_sids, scores, valid)`.

  hist_sids int32 [B, L, N], hist_mask bool [B, L] -> pred_sids int32 [B, K, N],
  scores float32 [B, K] (summed log-probabilities, best first), valid bool [B, K]
  (False where fewer than K legal SIDs were found; those rows are zeros / -inf).
  `beam`: width of every step for confidence, and of every fixed-order step unless
  `step_beams` (one width per fill step) is given. Autoregressive models need
  left_to_right. `renormalize`: normalise each step over the legal codes (see the
  module docstring). The result is jit-compatible (and `Decoder.apply` takes the tables
  as an argument for jitting with explicit shardings).
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"decode strategy must be one of {STRATEGIES}, got {strategy!r}")
  if model.kind == "autoregressive" and strategy != "left_to_right":
    raise ValueError(f"autoregressive models decode left_to_right only, got {strategy!r}")
  if (model.n_digit, model.codebook_size) != (catalogue.n_digit, catalogue.codebook_size):
    raise ValueError("model and catalogue disagree on n_digit / codebook_size")
  n = model.n_digit
  if strategy == "confidence" or not step_beams:
    widths = (int(beam),) * n
  else:
    widths = tuple(int(x) for x in step_beams)
    if len(widths) != n:
      raise ValueError(f"step_beams needs {n} widths (one per fill step), got {widths}")
  if min(widths) < 1 or top_k < 1:
    raise ValueError(f"beam widths and top_k must be >= 1, got {widths}, {top_k}")
  return Decoder(model, catalogue, strategy, widths, digit_order(strategy, n, order_seed),
                 int(top_k), bool(greedy_last), bool(renormalize))
