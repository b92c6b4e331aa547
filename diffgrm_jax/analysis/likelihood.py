"""Log-likelihood of a user's true next SID under a trained model, per fill order.

Used to separate how well a model fits the targets from how well the beam search finds
them (experiments/target_nll.py). For DIFF_GRM all 2^N - 1 partial SIDs of each target are
scored in one decoder pass (one view per known-digit pattern); the left-to-right chain
and the best chain over all N! fill orders (the score confidence decoding gives a finished
SID, since its beams merge fill orders and keep the best) are read off those scores, the
best one by a dynamic programme over the patterns. Each conditional is normalised over all
C codes, or, given the legality tables, over the legal codes only.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from diffgrm_jax.sid import catalogue as catalogue_lib


def patterns(n):
  """Known-digit patterns with at least one digit unknown: bool [2^n - 1, n]."""
  return np.array([p for p in itertools.product([False, True], repeat=n) if not all(p)])[:, ::-1]


def target_log_probs(model, params, batch, kind, tables=None):
  """log p(target digit d | target digits in pattern P): float [B, P, N] (AR: [B, 1, N]).

  With legality `tables` (catalogue.Catalogue.tables()) each conditional is renormalised
  over the codes that keep the partial SID a catalogue item's (targets are always legal):
  the fit among real items only, since decoding never proposes another SID.
  """
  enc = model.apply({"params": params}, batch["hist_sids"], batch["hist_mask"],
                    method="encode")
  target = batch["target_sid"]
  b, n = target.shape
  if kind == "autoregressive":
    known = jnp.ones((b, 1, n), bool)
  else:
    known = jnp.broadcast_to(jnp.asarray(patterns(n)), (b, 2 ** n - 1, n))
  codes = jnp.broadcast_to(target[:, None], known.shape)
  logits = model.apply({"params": params}, enc, batch["hist_mask"], codes, known,
                       method="decode")
  if tables is not None:
    if kind == "autoregressive":  # step t knows exactly the digits before it
      known = jnp.broadcast_to(jnp.tril(jnp.ones((n, n), bool), -1), (b, n, n))[:, None]
      legal = catalogue_lib.legal_mask(tables, jnp.broadcast_to(codes[..., None, :], known.shape),
                                  known, n, logits.shape[-1])
      legal = jnp.diagonal(legal, axis1=-3, axis2=-2).transpose(0, 1, 3, 2)  # [B, 1, N, C]
    else:
      # A known digit has no legal next code; its entry is never read, so leave it whole.
      legal = catalogue_lib.legal_mask(tables, codes, known, n, logits.shape[-1]) | known[..., None]
    logits = jnp.where(legal, logits, -jnp.inf)
  lp = jax.nn.log_softmax(logits, -1)
  return jnp.take_along_axis(lp, codes[..., None], -1)[..., 0]


def l2r_and_best(lp, kind):
  """(l2r per-step log-probs [B, N], best-order total [B] or None) from target_log_probs."""
  n = lp.shape[-1]
  if kind == "autoregressive":
    return lp[:, 0], None
  pats = patterns(n)
  index = {tuple(p): i for i, p in enumerate(pats)}
  prefix = [index[tuple(np.arange(n) < t)] for t in range(n)]
  l2r = np.stack([lp[:, prefix[t], t] for t in range(n)], 1)
  # best[S]: best chain log-prob of filling exactly the digits in S, over fill orders.
  best = {(False,) * n: np.zeros(lp.shape[0])}
  for size in range(n):
    for p in pats[pats.sum(1) == size]:
      for d in np.flatnonzero(~p):
        q = p.copy()
        q[d] = True
        cand = best[tuple(p)] + lp[:, index[tuple(p)], d]
        best[tuple(q)] = np.maximum(best[tuple(q)], cand) if tuple(q) in best else cand
  return l2r, best[(True,) * n]
