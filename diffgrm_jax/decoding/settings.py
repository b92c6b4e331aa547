"""What a decoding run does, built once from `config.decode` and passed unchanged.

`SearchSettings`: the beam search (strategy, beam width after each fill step, SIDs
returned, ...): frozen and hashable, so it is also the key under which a compiled decoder
is cached (`evaluation/evaluate.py`). `RankingSettings`: how the returned SIDs become
ranked items (`sid/ranking.py`); it changes no compiled program.

`check_config` holds the `decode` section's rules; the settings check their own values
with the same functions, so a rule lives in one place.
"""

import dataclasses

import numpy as np

from diffgrm_jax.runtime.cli import ConfigError
from diffgrm_jax.runtime.cli import check_choice
from diffgrm_jax.sid import ranking

# 'release_confidence' is the released code's search (release/search.py), for comparisons.
STRATEGIES = ("confidence", "left_to_right", "random", "release_confidence")
ITEM_RANKINGS = ranking.ITEM_RANKINGS  # how decoded SIDs become ranked items


def check_kind(kind, strategy):
  """The autoregressive model decodes left to right only; the release's search needs a
  DIFF_GRM model."""
  if kind == "autoregressive" and strategy != "left_to_right":
    raise ConfigError(f"decode.strategy={strategy!r}: the autoregressive model decodes "
                      "left_to_right only")
  if strategy == "release_confidence" and kind != "diffgrm":
    raise ConfigError("decode.strategy='release_confidence' needs model.kind='diffgrm'")


# `decode.batch_size = 0`: users per decoding batch on CPU, and on GPU/TPU, where a large
# batch keeps the device busy (a beam-256 batch of 1024 users holds about 1 GB of logits).
AUTO_BATCH = {"cpu": 256, "accelerator": 1024}


def batch_size(config, platform=None):
  """Users per decoding batch: `decode.batch_size`, or for 0 the backend's `AUTO_BATCH`.
  `platform` defaults to JAX's backend."""
  n = int(config.decode.batch_size)
  if n:
    return n
  import jax  # pylint: disable=g-import-not-at-top
  return AUTO_BATCH["cpu" if (platform or jax.default_backend()) == "cpu" else "accelerator"]


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
class SearchSettings:
  """The beam search: strategy, beam width after each fill step and the rest of the
  search fields of `config.decode` (same names)."""
  strategy: str
  widths: tuple  # beams kept after each fill step (one per digit)
  top_k: int = 10  # SIDs the SID-level metrics rank (the first top_k returned)
  # SIDs returned per user, >= top_k (0: top_k); they feed the item ranking. The config's
  # `decode.item_sids`, resolved (`from_config`).
  item_sids: int = 0
  greedy_last: bool = False  # confidence: fill the last digit by argmax per beam
  order_seed: int = 42  # random: seed of the digit order
  renormalize_legal: bool = False  # normalise each step over the legal codes only
  batch_size: int = 256  # users per decoding batch

  def __post_init__(self):
    check_choice("decode.strategy", self.strategy, STRATEGIES)
    object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
    if not self.widths or min(self.widths) < 1 or self.top_k < 1:
      raise ConfigError(f"beam widths and decode.top_k must be >= 1, got {self.widths}, "
                        f"{self.top_k}")
    object.__setattr__(self, "item_sids", max(int(self.item_sids), int(self.top_k)))

  @classmethod
  def from_config(cls, config, split, beam=None):
    """Settings for decoding `split` ('valid' or 'test'); `beam` overrides the split's beam."""
    b = config.decode
    widths = split_widths(b, split, config.sid.n_digit, beam)
    # SIDs returned: enough for the item ranking (`item_sids`, 0 = every final beam), at
    # least top_k, at most the last beam width (no search keeps more).
    item_sids = min(max(int(b.top_k), int(b.item_sids) or widths[-1]),
                    max(widths[-1], int(b.top_k)))
    return cls(strategy=b.strategy, widths=widths, top_k=int(b.top_k), item_sids=item_sids,
               greedy_last=bool(b.greedy_last), order_seed=int(b.order_seed),
               renormalize_legal=bool(b.renormalize_legal), batch_size=batch_size(config))

  @property
  def order(self):
    """Digit filled at each step (fixed-order strategies)."""
    return digit_order(self.strategy, len(self.widths), self.order_seed)

  def describe(self):
    w = self.widths
    return f"{self.strategy} beam {w[0] if len(set(w)) == 1 else '/'.join(map(str, w))}"


@dataclasses.dataclass(frozen=True)
class RankingSettings:
  """How decoded SIDs become ranked items (`sid/ranking.py`; config names)."""
  item_ranking: str = "score"  # one of ITEM_RANKINGS
  item_prior_alpha: float = 1.0  # smoothing of P(item | SID) for the 'score' ranking

  def __post_init__(self):
    check_choice("decode.item_ranking", self.item_ranking, ITEM_RANKINGS)
    if not self.item_prior_alpha > 0:
      raise ConfigError(f"decode.item_prior_alpha={self.item_prior_alpha}: must be > 0")

  @classmethod
  def from_config(cls, config):
    b = config.decode
    return cls(item_ranking=b.item_ranking, item_prior_alpha=float(b.item_prior_alpha))


def check_config(config):
  """The `decode` section's values that cannot work whatever the data or devices."""
  b, n = config.decode, config.sid.n_digit
  check_choice("decode.strategy", b.strategy, STRATEGIES)
  check_kind(config.model.kind, b.strategy)
  RankingSettings.from_config(config)  # item_ranking, item_prior_alpha
  if b.item_sids < 0:
    raise ConfigError(f"decode.item_sids={b.item_sids}: must be >= 0 (0 = every final beam)")
  if b.exclude_history and config.model.kind != "sasrec":
    raise ConfigError("decode.exclude_history=True: only model.kind='sasrec' ranks items "
                      "itself; the SID-writing kinds rank the items of decoded SIDs")
  for name in ("valid_beam", "test_beam"):
    if b[name] < b.top_k:
      raise ConfigError(f"decode.{name}={b[name]} is smaller than decode.top_k={b.top_k}")
  if b.step_beams and len(b.step_beams) != n:
    raise ConfigError(f"decode.step_beams has {len(b.step_beams)} entries, sid.n_digit={n}")
  if b.step_beams and b.step_beams[-1] < b.top_k:
    raise ConfigError(f"decode.step_beams[-1]={b.step_beams[-1]} is smaller than "
                      f"decode.top_k={b.top_k}")
