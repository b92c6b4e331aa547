"""Beam-search decoding of semantic IDs as one jitted `lax.scan` over fill steps.

Shapes: B = users, W = beams per user, N = n_digit, C = codebook_size, K = top_k.

Every strategy is one jitted function: the encoder runs once per user, then what every
step shares (cross-attention over the history and the first block's self-attention rows,
folded into their projections: `model/decode_context.py`), step 0 (all beams share the
all-masked input) once per user with one beam, and the remaining N - 1 fill steps are a
`lax.scan` whose carry is W beams per user (confidence: steps 1 .. N-2 in the scan, the
last step after it). Each step asks the model for the logits of the digits it can fill
only (`decode_context.decode(query_digits=...)`): one digit for the fixed orders and for
confidence's last step, N - 1 before it, so the last decoder block, the log-softmax, the
legality lookup and the top-k skip the others (exact; the heads still run at all N
digits, one einsum). Scores are sums of
per-step log-probabilities: `log_softmax` over the filled digit's C codes (normalised
over all C codes), with extensions that no catalogue item matches set to -inf
(`catalogue.legal_mask`), so an illegal partial SID is pruned the step it would appear,
whatever the fill order.

Strategies (docs/method.md, Decoding):
  left_to_right  digits 0, 1, .., N-1; beam width `widths[t]` after step t.
  random         one digit order drawn from `order_seed` for the whole run; widths as above.
  confidence     (paper's CPD) every (beam, still-masked digit, code) triple competes in
                 one global top-W; `greedy_last` fills the last digit by argmax per beam
                 (the released code) instead.

Fixed-order strategies carry max(widths) beams in the scan; steps with a smaller
width keep the surplus beams at -inf (padding beams cost decoder compute, not results).

De-duplication (confidence): beams that reach the same partial SID by different fill
orders are *merged*: only the copy with the best score survives. Because a step's
log-probabilities depend only on the partial SID (not on the path), this is an exact
dynamic programme: a partial's score is the best over all fill orders that reach it.
The merge looks at the best W * N candidates, which is enough for exactness (a partial
with n known digits has at most n parents, n <= N). Fixed orders cannot produce
duplicates. Finished SIDs are therefore unique.

Scores normalise each step over all C codes, as the released code does. With
`renormalize_legal` they normalise over the legal codes only, so a beam's score is the chain
log-probability among catalogue SIDs: probability mass on codes that lead to no item,
which differs between beams, then no longer lowers a beam's score.

`settings.SearchSettings` holds every choice above.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from diffgrm_jax.decoding import settings as settings_lib
from diffgrm_jax.decoding.beam_ops import gather_beams
from diffgrm_jax.decoding.beam_ops import top_k_padded
from diffgrm_jax.model import decode_context
from diffgrm_jax.sid import catalogue as catalogue_lib


@dataclasses.dataclass(frozen=True, eq=False)
class Decoder:
  """Decoder for one setting; call it as `decoder(variables, hist_sids, hist_mask)`.

  `apply(variables, tables, hist_sids, hist_mask)` is the same function with the legality
  tables passed explicitly (use it under your own `jax.jit` with shardings).
  Returns pred_sids int32 [B, K, N], scores float32 [B, K] (best first), valid bool [B, K],
  K = `settings.item_sids`.
  """
  model: object  # a model/diffgrm.py module
  catalogue: catalogue_lib.Catalogue
  settings: settings_lib.SearchSettings

  def __post_init__(self):
    s, m, cat = self.settings, self.model, self.catalogue
    if (m.n_digit, m.codebook_size) != (cat.n_digit, cat.codebook_size):
      raise ValueError("model and catalogue disagree on n_digit / codebook_size")
    if len(s.widths) != m.n_digit:
      raise ValueError(f"{m.n_digit} fill steps need {m.n_digit} beam widths, got {s.widths}")
    # Built eagerly: under an outer jit they are concrete arrays, not tracers.
    object.__setattr__(self, "tables", self.catalogue.tables())

  def __call__(self, variables, hist_sids, hist_mask):
    return self.apply(variables, self.tables, hist_sids, hist_mask)

  def apply(self, variables, tables, hist_sids, hist_mask):
    model, n, c = self.model, self.model.n_digit, self.model.codebook_size
    enc = model.apply(variables, hist_sids, hist_mask, method="encode")
    # Cross-attention over each user's history and the first block's self-attention rows,
    # folded into their projections once for every step.
    context = decode_context.build(model, variables, enc)
    b = hist_sids.shape[0]

    def legal_log_probs(codes, known, query=None):
      """[B, W, N] -> [B, W, N, C], -inf at illegal codes; with `query` int [B, W, M]: those
      digits only, [B, W, M, C] (the model computes its last block there only)."""
      logits = decode_context.decode(model, variables, context, hist_mask, codes, known, query)
      ok = catalogue_lib.legal_mask(tables, codes, known, n, c, digits=query)
      if self.settings.renormalize_legal:
        logits = jnp.where(ok, logits, -jnp.inf)
      # A (beam, digit) with no legal code (e.g. a known digit) stays all -inf, not NaN.
      return jnp.where(ok, jax.nn.log_softmax(logits, axis=-1), -jnp.inf)

    zeros = jnp.zeros((b, 1, n), jnp.int32)
    none = jnp.zeros((b, 1, n), bool)
    s0 = legal_log_probs(zeros, none)[:, 0]  # step 0, once per user: [B, N, C]
    if self.settings.strategy == "confidence":
      codes, scores = self._confidence(legal_log_probs, s0)
    else:
      codes, scores = self._fixed_order(legal_log_probs, s0)
    scores, idx = top_k_padded(scores, self.settings.item_sids)
    pred = gather_beams(codes, idx)
    valid = scores > -jnp.inf
    return jnp.where(valid[..., None], pred, 0).astype(jnp.int32), scores, valid

  def _fixed_order(self, legal_log_probs, s0):
    n, c = self.model.n_digit, self.model.codebook_size
    order, widths = np.asarray(self.settings.order), np.asarray(self.settings.widths)
    w = int(widths.max())
    b = s0.shape[0]
    scores, code0 = top_k_padded(s0[:, order[0]], min(int(widths[0]), c))
    scores, code0 = top_k_padded(scores, w)[0], jnp.pad(code0, ((0, 0), (0, max(0, w - code0.shape[1]))))
    digit_oh = jnp.arange(n) == order[0]
    codes = jnp.where(digit_oh, code0[..., None], 0).astype(jnp.int32)  # [B, W, N]
    known_before = np.stack([np.isin(np.arange(n), order[:t]) for t in range(n)])

    def step(carry, xs):
      codes, scores = carry
      digit, known_t, width = xs
      known = jnp.broadcast_to(known_t, codes.shape)
      query = jnp.broadcast_to(digit, (b, w, 1))  # the one digit this step fills
      cand = scores[..., None] + legal_log_probs(codes, known, query)[:, :, 0]
      top, idx = jax.lax.top_k(cand.reshape(b, w * c), w)
      top = jnp.where(jnp.arange(w) < width, top, -jnp.inf)
      parent, code = idx // c, idx % c
      new = jnp.where(jnp.arange(n) == digit, code[..., None], gather_beams(codes, parent))
      return (new.astype(jnp.int32), top), None

    xs = (jnp.asarray(order[1:]), jnp.asarray(known_before[1:]), jnp.asarray(widths[1:]))
    (codes, scores), _ = jax.lax.scan(step, (codes, scores), xs)
    return codes, scores

  def _confidence(self, legal_log_probs, s0):
    n, c = self.model.n_digit, self.model.codebook_size
    bits = self.catalogue.bits
    w = self.settings.widths[0]
    b = s0.shape[0]
    scores, idx = top_k_padded(s0.reshape(b, n * c), w)
    digit, code = idx // c, idx % c
    known = jnp.arange(n) == digit[..., None]  # [B, W, N]
    codes = jnp.where(known, code[..., None], 0).astype(jnp.int32)

    def step(codes, known, scores, last):
      # Before the last step a beam has at least one known digit, so its N - 1 first
      # still-masked digits are all it can fill (at step t it has N - t: the slots past
      # them hold known digits, which have no legal code); at the last step it has one.
      # The model computes the queried digits alone.
      n_query = 1 if last else n - 1
      query = jnp.argsort(known, axis=-1, stable=True)[..., :n_query]  # masked digits first
      cand = scores[..., None, None] + legal_log_probs(codes, known, query)  # [B, W, M, C]
      cand = cand.reshape(b, w, n_query * c)
      if last and self.settings.greedy_last:  # the release: the last digit is each beam's argmax
        best = jnp.argmax(cand, axis=-1)
        cand = jnp.where(jnp.arange(n_query * c) == best[..., None], cand, -jnp.inf)
      # Enough candidates for an exact merge (see module doc).
      m = min(w * n_query * c, w * n)
      top, idx = jax.lax.top_k(cand.reshape(b, w * n_query * c), m)
      parent, slot, code = idx // (n_query * c), (idx // c) % n_query, idx % c
      digit = jnp.take_along_axis(gather_beams(query, parent), slot[..., None], axis=-1)
      is_d = jnp.arange(n) == digit
      new_codes = jnp.where(is_d, code[..., None], gather_beams(codes, parent)).astype(jnp.int32)
      new_known = is_d | gather_beams(known, parent)
      key = (catalogue_lib.pack_full_key(new_codes, bits, xp=jnp) if last else
             catalogue_lib.pack_partial_key(new_codes, new_known, bits, xp=jnp))
      # Merge: sort by (key, -score); all but the first of each key drop to -inf.
      key_s, neg_s, perm = jax.lax.sort(
          (key, -top, jnp.broadcast_to(jnp.arange(m), key.shape)), dimension=-1, num_keys=2)
      dup = jnp.concatenate([jnp.zeros((b, 1), bool), key_s[:, 1:] == key_s[:, :-1]], axis=-1)
      merged = jnp.where(dup, -jnp.inf, -neg_s)
      top_w, sel = top_k_padded(merged, w)
      src = jnp.take_along_axis(perm, sel, axis=-1)
      return gather_beams(new_codes, src), gather_beams(new_known, src), top_w

    # Steps 1 .. N-2 are one lax.scan; the last step (its own key packing, one masked
    # digit per beam, greedy_last) follows it.
    carry = (codes, known, scores)
    if n > 2:
      carry, _ = jax.lax.scan(lambda cr, _: (step(*cr, last=False), None), carry, None,
                              length=n - 2)
    if n > 1:
      carry = step(*carry, last=True)
    codes, _, scores = carry
    return codes, scores
