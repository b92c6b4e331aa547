"""The released PyTorch code's confidence beam search, for exact comparisons with it.

`decode.strategy='release_confidence'` selects it. It differs from `confidence` (see
`decoding/beam_search.py`) in four ways, all of which change the top-10 a user gets:

  - no legality during the search: every (beam, masked digit, code) competes, whether or
    not a catalogue item has that partial SID, and a digit that is already filled costs
    -1e9 (a finite penalty) instead of being excluded;
  - no merging: a partial SID reached by two fill orders occupies two beams;
  - steps 1..N-2 keep the global top-W; the last step fills each beam's one remaining
    digit with its most likely code (greedy);
  - the W finished SIDs are sorted by score; SIDs that are no catalogue item are dropped,
    repeats of a SID keep their first (best) copy, and the first K survivors are returned.
    A list shorter than K is filled by repeating its last SID (marked `valid=False` here,
    so metrics do not count a repeat twice); with no legal SID at all, beam 0 is returned.

Scores are sums of `log_softmax` over all C codes of each step. Inputs and outputs are
those of `decoding.beam_search.Decoder`: pred_sids int32 [B, K, N], scores float32 [B, K] (-inf
where not valid), valid bool [B, K].
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from diffgrm_jax.decoding.beam_ops import gather_beams
from diffgrm_jax.sid.legality import pack_full_key

# The release's finite "minus infinity" for digits that are already filled.
FILLED_PENALTY = -1e9


@dataclasses.dataclass(frozen=True, eq=False)
class ReleaseConfidenceDecoder:
  """Call as `decoder(variables, hist_sids, hist_mask)`; `apply(variables, tables, ...)`
  takes the catalogue's sorted full-SID keys (`decoder.tables`) explicitly."""
  model: object  # a DIFF_GRM module (model/diffgrm.py)
  catalogue: object  # catalogue.Catalogue
  beam: int
  top_k: int

  def __post_init__(self):
    n, c = self.model.n_digit, self.model.codebook_size
    if n < 2:
      raise ValueError("release_confidence decoding needs n_digit >= 2")
    if not 1 <= self.beam <= n * c:
      raise ValueError(f"release_confidence beam must lie in [1, {n * c}], got {self.beam}")
    keys = self.catalogue.group_keys
    if not len(keys):  # no SID: one key that matches nothing
      keys = np.array([0xFFFFFFFF], np.uint32)
    object.__setattr__(self, "tables", jnp.asarray(keys, jnp.uint32))

  def __call__(self, variables, hist_sids, hist_mask):
    return self.apply(variables, self.tables, hist_sids, hist_mask)

  def apply(self, variables, tables, hist_sids, hist_mask):
    model, n, c, w = self.model, self.model.n_digit, self.model.codebook_size, self.beam
    enc = model.apply(variables, hist_sids, hist_mask, method="encode")
    b = hist_sids.shape[0]

    def log_probs(codes, known):  # [B, W, N] -> [B, W, N, C]
      logits = model.apply(variables, enc, hist_mask, codes, known, method="decode")
      return jax.nn.log_softmax(logits, axis=-1)

    # Step 0: one global top-W over every (digit, code) of the all-masked pass.
    lp0 = log_probs(jnp.zeros((b, 1, n), jnp.int32), jnp.zeros((b, 1, n), bool))[:, 0]
    scores, idx = jax.lax.top_k(lp0.reshape(b, n * c), w)
    digit, code = idx // c, idx % c
    known = jnp.arange(n) == digit[..., None]  # [B, W, N]
    codes = jnp.where(known, code[..., None], 0).astype(jnp.int32)

    for _ in range(1, n - 1):  # steps 1..N-2: global top-W, no legality, no merging
      lp = log_probs(codes, known) + jnp.where(known, FILLED_PENALTY, 0.0)[..., None]
      cand = (scores[..., None, None] + lp).reshape(b, w * n * c)
      scores, idx = jax.lax.top_k(cand, w)
      parent, digit, code = idx // (n * c), (idx // c) % n, idx % c
      is_d = jnp.arange(n) == digit[..., None]
      codes = jnp.where(is_d, code[..., None], gather_beams(codes, parent)).astype(jnp.int32)
      known = is_d | gather_beams(known, parent)

    # Last step: each beam's first still-masked digit takes its most likely code.
    lp = log_probs(codes, known)
    last = jnp.argmax(~known, axis=-1)  # [B, W]
    lp_last = jnp.take_along_axis(lp, last[..., None, None], axis=2)[:, :, 0]  # [B, W, C]
    best_lp, best = lp_last.max(-1), jnp.argmax(lp_last, axis=-1)
    codes = jnp.where(jnp.arange(n) == last[..., None], best[..., None], codes).astype(jnp.int32)
    scores = scores + best_lp
    return self._select(tables, codes, scores)

  def _select(self, tables, codes, scores):
    """Sort, drop illegal SIDs, keep the first copy of each, pad by repetition."""
    b, w, _ = codes.shape
    k = self.top_k
    order = jnp.argsort(-scores, axis=-1, stable=True)
    s_codes, s_scores = gather_beams(codes, order), jnp.take_along_axis(scores, order, -1)
    key = pack_full_key(s_codes, self.catalogue.bits, xp=jnp)
    pos = jnp.clip(jnp.searchsorted(tables, key), 0, tables.shape[0] - 1)
    legal = tables[pos] == key
    earlier = jnp.tril(jnp.ones((w, w), bool), -1)  # earlier[i, j]: j comes before i
    dup = ((key[:, :, None] == key[:, None, :]) & earlier).any(-1)
    keep = legal & ~dup
    n_keep = keep.sum(-1)  # [B]
    kept = jnp.argsort(~keep, axis=-1, stable=True)  # kept beams first, in score order
    slot = jnp.arange(k)
    src = jnp.take_along_axis(kept, jnp.minimum(slot, jnp.maximum(n_keep - 1, 0)[:, None]), -1)
    valid = slot[None, :] < n_keep[:, None]
    pred = jnp.where((n_keep > 0)[:, None, None], gather_beams(s_codes, src), codes[:, :1])
    out_scores = jnp.where(valid, jnp.take_along_axis(s_scores, src, -1), -jnp.inf)
    return pred.astype(jnp.int32), out_scores, valid
