"""Target likelihoods (diffgrm_jax.analysis.likelihood): the chains are normalised distributions and
the best-order dynamic programme equals a brute force over all fill orders."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgrm_jax.analysis import likelihood
from diffgrm_jax.sid import catalogue as catalogue_lib
from support.tiny import tiny_model

N, C = 3, 4


def test_best_order_equals_brute_force_over_permutations():
  rng = np.random.default_rng(0)
  n = 4
  pats = likelihood.patterns(n)
  assert pats.shape == (2 ** n - 1, n) and len({tuple(p) for p in pats}) == 2 ** n - 1
  lp = -rng.exponential(size=(6, len(pats), n))
  index = {tuple(bool(x) for x in p): i for i, p in enumerate(pats)}
  l2r, best = likelihood.l2r_and_best(lp, "diffgrm")
  chains = []
  for order in itertools.permutations(range(n)):
    known, total = [False] * n, np.zeros(6)
    for d in order:
      total = total + lp[:, index[tuple(known)], d]
      known[d] = True
    chains.append(total)
    if order == tuple(range(n)):
      np.testing.assert_allclose(l2r.sum(1), total)
  np.testing.assert_allclose(best, np.max(chains, 0))


@pytest.mark.parametrize("kind", ["diffgrm", "autoregressive"])
def test_left_to_right_chain_sums_to_one_over_all_sids(kind):
  """exp(l2r chain) over all C^N SIDs of one user is 1: each step conditions on exactly
  the digits before it (a leak of later digits would break the normalisation)."""
  model = tiny_model(kind, n_digit=N, codebook_size=C, d_model=16, n_inner=32, n_dec_layers=1,
                     max_history_len=5)
  sids = np.array(list(itertools.product(range(C), repeat=N)), np.int32)  # [C^N, N]
  m = len(sids)
  rng = np.random.default_rng(1)
  hist = np.broadcast_to(rng.integers(0, C, (1, 5, N)), (m, 5, N)).astype(np.int32)
  mask = np.broadcast_to(np.arange(5) < 3, (m, 5))
  params = jax.jit(model.init)(jax.random.key(0), hist[:1], mask[:1], sids[:1, None],
                               np.ones((1, 1, N), bool))["params"]
  # Random weights far from init scale so the conditionals are far from uniform.
  params = jax.tree.map(lambda x: x * 20.0, params)
  batch = {"hist_sids": jnp.asarray(hist), "hist_mask": jnp.asarray(mask),
           "target_sid": jnp.asarray(sids)}
  score = jax.jit(lambda p, b, t: likelihood.target_log_probs(model, p, b, kind, t))
  lp = np.asarray(score(params, batch, None), np.float64)
  l2r, best = likelihood.l2r_and_best(lp, kind)
  assert np.exp(l2r.sum(1)).sum() == pytest.approx(1.0, abs=1e-5)
  assert np.exp(l2r.sum(1)).max() > 3.0 / m  # not uniform: the test would see a leak
  if kind == "diffgrm":
    assert (best >= l2r.sum(1) - 1e-9).all() and np.exp(best).sum() > 1.0 + 1e-3

  # Renormalised over a catalogue's legal codes, the chain sums to 1 over its SIDs alone.
  catalogue_rows = rng.choice(m, size=9, replace=False)
  cat = catalogue_lib.Catalogue.from_sids(np.concatenate([np.zeros((1, N), np.int32),
                                                     sids[catalogue_rows]]), C)
  sub = {k: v[catalogue_rows] for k, v in batch.items()}
  lp = np.asarray(score(params, sub, cat.tables()), np.float64)
  l2r, _ = likelihood.l2r_and_best(lp, kind)
  assert np.exp(l2r.sum(1)).sum() == pytest.approx(1.0, abs=1e-5)
  assert (lp <= 1e-6).all() and np.isfinite(lp).all()
