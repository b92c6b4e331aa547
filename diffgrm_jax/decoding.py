"""Beam-search decoding of semantic IDs, and the one object that says how to decode.

Shapes: B = users, W = beams per user, N = n_digit, C = codebook_size, K = top_k.

Every strategy is one jitted function: the encoder runs once per user, then what every
step shares (cross-attention over the history and the first block's self-attention rows,
folded into their projections: `DiffGRM.decode_context`), step 0 (all beams share the
all-masked input) once per user with one beam, and the remaining N - 1 fill steps are a
`lax.scan` whose carry is W beams per user (confidence: steps 1 .. N-2 in the scan, the
last step after it). Each step asks the model for the logits of the digits it can fill
only (`DiffGRM.decode(query_digits=...)`): one digit for the fixed orders and for
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
`renormalize` they normalise over the legal codes only, so a beam's score is the chain
log-probability among catalogue SIDs: probability mass on codes that lead to no item,
which differs between beams, then no longer lowers a beam's score.

`DecodeSettings` (built once from `config.decode` by `DecodeSettings.from_config`) holds
every choice above; it is frozen and hashable, so it is also the key under which a
compiled decoder is cached (`evaluation.compiled_decoder`).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from diffgrm_jax import catalogue as catalogue_lib
from diffgrm_jax import compile_options
from diffgrm_jax import ranking
from diffgrm_jax import release_search
from diffgrm_jax.cli import ConfigError
from diffgrm_jax.model import DiffGRM

# 'release_confidence' is the released code's search (release_search.py), for comparisons.
STRATEGIES = ("confidence", "left_to_right", "random", "release_confidence")
ITEM_RANKINGS = ranking.ITEM_RANKINGS  # how decoded SIDs become ranked items


def split_beam(decode, split, beam=None):
  """The split's beam: `beam` when given, else `valid_beam` for 'valid', `test_beam` otherwise."""
  if beam is not None:
    return beam
  return decode.valid_beam if split == "valid" else decode.test_beam


def split_widths(decode, split, n_digit, beam=None):
  """Beam width after each fill step when decoding `split` under the `decode` config section.

  The one place that resolves widths: the split's beam (`split_beam`) for every step,
  except that the fixed-order strategies use `step_beams` (one width per fill step) when
  it is set.
  """
  beam = split_beam(decode, split, beam)
  if decode.strategy in ("confidence", "release_confidence") or not decode.step_beams:
    return (int(beam),) * n_digit
  return tuple(int(x) for x in decode.step_beams)


def digit_order(strategy, n_digit, order_seed=42):
  """Fill order of the fixed-order strategies (confidence has none: returns range(N))."""
  if strategy == "random":
    return tuple(int(d) for d in np.random.default_rng(order_seed).permutation(n_digit))
  return tuple(range(n_digit))


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  """How to decode: strategy, beam width after each fill step and the rest of `config.decode`.

  Frozen and hashable: built once, passed through every layer unchanged, and the key of
  the compiled-decoder cache.
  """
  strategy: str
  widths: tuple  # beams kept after each fill step (one per digit)
  top_k: int = 10  # SIDs the SID-level metrics rank (the first top_k returned)
  n_sids: int = 0  # SIDs returned per user, >= top_k (0: top_k); they feed the item ranking
  item_ranking: str = "score"  # one of ITEM_RANKINGS: how decoded SIDs become ranked items
  item_prior_alpha: float = 1.0  # smoothing of P(item | SID) for the 'score' ranking
  greedy_last: bool = False  # confidence: fill the last digit by argmax per beam
  order_seed: int = 42  # random: seed of the digit order
  renormalize: bool = False  # normalise each step over the legal codes only
  batch_size: int = 256  # users per decoding batch

  def __post_init__(self):
    if self.strategy not in STRATEGIES:
      raise ValueError(f"decode strategy must be one of {STRATEGIES}, got {self.strategy!r}")
    object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
    if not self.widths or min(self.widths) < 1 or self.top_k < 1:
      raise ValueError(f"beam widths and top_k must be >= 1, got {self.widths}, {self.top_k}")
    object.__setattr__(self, "n_sids", max(int(self.n_sids), int(self.top_k)))
    if self.item_ranking not in ITEM_RANKINGS:
      raise ValueError(f"item ranking must be one of {ITEM_RANKINGS}, got {self.item_ranking!r}")

  @classmethod
  def from_config(cls, config, split, beam=None):
    """Settings for decoding `split` ('valid' or 'test'); `beam` overrides the split's beam."""
    b = config.decode
    widths = split_widths(b, split, config.sid.n_digit, beam)
    # SIDs returned: enough for the item ranking (`item_sids`, 0 = every final beam), at
    # least top_k, at most the last beam width (no search keeps more).
    n_sids = min(max(int(b.top_k), int(b.item_sids) or widths[-1]), max(widths[-1], int(b.top_k)))
    return cls(strategy=b.strategy, widths=widths,
               top_k=int(b.top_k), n_sids=n_sids, item_ranking=b.item_ranking,
               item_prior_alpha=float(b.item_prior_alpha), greedy_last=bool(b.greedy_last),
               order_seed=int(b.order_seed), renormalize=bool(b.renormalize_legal),
               batch_size=int(b.batch_size))

  def search(self):
    """These settings with the item-ranking fields at their defaults: what the compiled
    decoder depends on (its cache key)."""
    return dataclasses.replace(self, item_ranking="score", item_prior_alpha=1.0)

  @property
  def order(self):
    """Digit filled at each step (fixed-order strategies)."""
    return digit_order(self.strategy, len(self.widths), self.order_seed)

  def describe(self):
    w = self.widths
    return f"{self.strategy} beam {w[0] if len(set(w)) == 1 else '/'.join(map(str, w))}"


def check_config(config):
  """The `decode` section's values that cannot work whatever the data or devices."""
  b, n = config.decode, config.sid.n_digit
  if b.strategy not in STRATEGIES:
    raise ConfigError(f"decode.strategy={b.strategy!r}: must be one of {STRATEGIES}")
  if config.model.kind == "autoregressive" and b.strategy != "left_to_right":
    raise ConfigError(f"decode.strategy={b.strategy!r}: the autoregressive model decodes "
                      "left_to_right only")
  if b.item_ranking not in ITEM_RANKINGS:
    raise ConfigError(f"decode.item_ranking={b.item_ranking!r}: must be one of {ITEM_RANKINGS}")
  if b.item_sids < 0:
    raise ConfigError(f"decode.item_sids={b.item_sids}: must be >= 0 (0 = every final beam)")
  if not b.item_prior_alpha > 0:
    raise ConfigError(f"decode.item_prior_alpha={b.item_prior_alpha}: must be > 0")
  for name in ("valid_beam", "test_beam"):
    if b[name] < b.top_k:
      raise ConfigError(f"decode.{name}={b[name]} is smaller than decode.top_k={b.top_k}")
  if b.step_beams and len(b.step_beams) != n:
    raise ConfigError(f"decode.step_beams has {len(b.step_beams)} entries, sid.n_digit={n}")
  if b.step_beams and b.step_beams[-1] < b.top_k:
    raise ConfigError(f"decode.step_beams[-1]={b.step_beams[-1]} is smaller than "
                      f"decode.top_k={b.top_k}")


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
  """Decoder for one setting; call it as `decoder(variables, hist_sids, hist_mask)`.

  `apply(variables, tables, hist_sids, hist_mask)` is the same function with the legality
  tables passed explicitly (use it under your own `jax.jit` with shardings).
  Returns pred_sids int32 [B, K, N], scores float32 [B, K] (best first), valid bool [B, K],
  K = `settings.n_sids`.
  """
  model: DiffGRM
  catalogue: catalogue_lib.Catalogue
  settings: DecodeSettings

  def __post_init__(self):
    s, m, cat = self.settings, self.model, self.catalogue
    if m.kind == "autoregressive" and s.strategy != "left_to_right":
      raise ValueError(f"autoregressive models decode left_to_right only, got {s.strategy!r}")
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
    enc = model.apply(variables, hist_sids, hist_mask, method=DiffGRM.encode)
    # Cross-attention over each user's history and the first block's self-attention rows,
    # folded into their projections once for every step (`DiffGRM.decode_context`).
    context = model.apply(variables, enc, method=DiffGRM.decode_context)
    b = hist_sids.shape[0]

    def legal_log_probs(codes, known, query=None):
      """[B, W, N] -> [B, W, N, C], -inf at illegal codes; with `query` int [B, W, M]: those
      digits only, [B, W, M, C] (the model computes its last block there only)."""
      logits = model.apply(variables, enc, hist_mask, codes, known, query_digits=query,
                           context=context, method=DiffGRM.decode)
      ok = catalogue_lib.legal_mask(tables, codes, known, n, c, digits=query)
      if self.settings.renormalize:
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
    scores, idx = _top_k_padded(scores, self.settings.n_sids)
    pred = _gather_beams(codes, idx)
    valid = scores > -jnp.inf
    return jnp.where(valid[..., None], pred, 0).astype(jnp.int32), scores, valid

  def _fixed_order(self, legal_log_probs, s0):
    n, c = self.model.n_digit, self.model.codebook_size
    order, widths = np.asarray(self.settings.order), np.asarray(self.settings.widths)
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
      query = jnp.broadcast_to(digit, (b, w, 1))  # the one digit this step fills
      cand = scores[..., None] + legal_log_probs(codes, known, query)[:, :, 0]
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
    w = self.settings.widths[0]
    b = s0.shape[0]
    scores, idx = _top_k_padded(s0.reshape(b, n * c), w)
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
      digit = jnp.take_along_axis(_gather_beams(query, parent), slot[..., None], axis=-1)
      is_d = jnp.arange(n) == digit
      new_codes = jnp.where(is_d, code[..., None], _gather_beams(codes, parent)).astype(jnp.int32)
      new_known = is_d | _gather_beams(known, parent)
      key = (catalogue_lib.pack_full_key(new_codes, bits, xp=jnp) if last else
             catalogue_lib.pack_partial_key(new_codes, new_known, bits, xp=jnp))
      # Merge: sort by (key, -score); all but the first of each key drop to -inf.
      key_s, neg_s, perm = jax.lax.sort(
          (key, -top, jnp.broadcast_to(jnp.arange(m), key.shape)), dimension=-1, num_keys=2)
      dup = jnp.concatenate([jnp.zeros((b, 1), bool), key_s[:, 1:] == key_s[:, :-1]], axis=-1)
      merged = jnp.where(dup, -jnp.inf, -neg_s)
      top_w, sel = _top_k_padded(merged, w)
      src = jnp.take_along_axis(perm, sel, axis=-1)
      return _gather_beams(new_codes, src), _gather_beams(new_known, src), top_w

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


def jit_decoder(decoder):
  """`jax.jit` of `decoder.apply` (variables, tables, hist_sids, hist_mask) with the
  backend's decoder options (`compile_options.py`)."""
  return jax.jit(decoder.apply, compiler_options=compile_options.options("decode"))


def make_decoder(model, catalogue, settings):
  """Builds `fn(variables, hist_sids, hist_mask) -> (pred_sids, scores, valid)`.

  hist_sids int32 [B, L, N], hist_mask bool [B, L] -> pred_sids int32 [B, K, N],
  scores float32 [B, K] (summed log-probabilities, best first), valid bool [B, K]
  (False where fewer than K legal SIDs were found; those rows are zeros / -inf);
  K = `settings.n_sids` (>= top_k; the first top_k are the SID-level ranking).
  `settings`: a `DecodeSettings`. Autoregressive models need left_to_right. The result
  is jit-compatible (and `Decoder.apply` takes the tables as an argument for jitting
  with explicit shardings).
  """
  if settings.strategy == "release_confidence":
    if model.kind != "diffgrm":
      raise ValueError("release_confidence decoding needs a diffgrm model")
    return release_search.ReleaseConfidenceDecoder(model, catalogue, settings.widths[0],
                                                   settings.n_sids)
  return Decoder(model, catalogue, settings)
