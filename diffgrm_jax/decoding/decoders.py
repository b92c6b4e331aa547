"""The search a strategy runs: `make_decoder`, and `jit_decoder` with the decoder's XLA options."""

import jax

from diffgrm_jax.decoding import beam_search
from diffgrm_jax.decoding import settings as settings_lib
from diffgrm_jax.release import search as release_search
from diffgrm_jax.runtime import compile_options


def make_decoder(model, catalogue, settings):
  """Builds `fn(variables, hist_sids, hist_mask) -> (pred_sids, scores, valid)`.

  hist_sids int32 [B, L, N], hist_mask bool [B, L] -> pred_sids int32 [B, K, N],
  scores float32 [B, K] (summed log-probabilities, best first), valid bool [B, K]
  (False where fewer than K legal SIDs were found; those rows are zeros / -inf);
  K = `settings.item_sids` (>= top_k; the first top_k are the SID-level ranking).
  `settings`: a `SearchSettings`. The result is jit-compatible, and its
  `apply(variables, tables, hist_sids, hist_mask)` takes the tables as an argument for
  jitting with explicit shardings.
  """
  settings_lib.check_kind(model.kind, settings.strategy)
  if settings.strategy == "release_confidence":
    return release_search.ReleaseConfidenceDecoder(model, catalogue, settings.widths[0],
                                                   settings.item_sids)
  return beam_search.Decoder(model, catalogue, settings)


def jit_decoder(decoder):
  """`jax.jit` of `decoder.apply` (variables, tables, hist_sids, hist_mask) with the
  backend's decoder options (`runtime/compile_options.py`)."""
  return jax.jit(decoder.apply, compiler_options=compile_options.options("decode"))
