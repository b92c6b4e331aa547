"""The beam searches (decoding/) against exhaustive references, with the catalogue's
legality table: batching, padding, search settings."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from support.catalogue_reference import items_of, padded_tables, ranked_items
from diffgrm_jax import config_checks
from diffgrm_jax.decoding import decoders
from diffgrm_jax.decoding import settings as decoding
from diffgrm_jax.sid import catalogue as catalogue_lib
from support.tiny import tiny_model

N, C = 4, 8


def _model(kind="diffgrm", c=C):
  return tiny_model(kind, codebook_size=c, n_dec_layers=1, max_history_len=8)


def _variables(model, seed):
  """Random weights with std 0.5 so that log-probabilities are far from uniform (no ties)."""
  l = 5
  # Only the shapes are needed: eval_shape skips running the initialisers.
  v = jax.eval_shape(model.init, jax.random.PRNGKey(seed), jnp.zeros((1, l, N), jnp.int32),
                     jnp.ones((1, l), bool), jnp.zeros((1, 1, N), jnp.int32),
                     jnp.zeros((1, 1, N), bool))
  v = jax.tree.map(lambda x: x, __import__("flax").linen.meta.unbox(v))
  leaves, tree = jax.tree.flatten(v)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def _catalogue_sids(rng, n_items, c=C, n_collide=3):
  sids = rng.integers(0, c, size=(n_items + 1, N))
  sids[0] = 0
  for _ in range(n_collide):  # collision groups: copy an item's SID onto another
    a, b = rng.integers(1, n_items + 1, size=2)
    sids[b] = sids[a]
  return sids.astype(np.int32)


def _history(rng, b, l=5, c=C):
  hist = rng.integers(0, c, size=(b, l, N)).astype(np.int32)
  lens = rng.integers(1, l + 1, size=b)
  mask = np.arange(l)[None] < lens[:, None]
  return jnp.asarray(hist), jnp.asarray(mask)


def _subset_log_probs(model, variables, hist, mask, uniq, renormalize=False):
  """Per user: log_softmax for every legal SID and known-digit subset: [B, S, 2^N, N, C];
  `renormalize`: over the codes some catalogue SID agreeing on the known digits has."""
  patterns = np.array([[(p >> d) & 1 for d in range(N)] for p in range(2 ** N)], bool)
  codes = np.repeat(uniq, 2 ** N, axis=0)  # [S*16, N]
  known = np.tile(patterns, (len(uniq), 1))
  b = hist.shape[0]
  enc = model.apply(variables, hist, mask, method="encode")
  logits = model.apply(variables, enc, mask, jnp.broadcast_to(codes, (b,) + codes.shape),
                       jnp.broadcast_to(known, (b,) + known.shape), method="decode")
  lp = np.array(jax.nn.log_softmax(logits, -1)).reshape(b, len(uniq), 2 ** N, N, C)
  if renormalize:
    for i in range(len(uniq)):
      for p, pat in enumerate(patterns):
        agree = np.all(uniq[:, pat] == uniq[i, pat], axis=1)
        for d in range(N):
          legal = np.unique(uniq[agree, d])
          lp[:, i, p, d] -= np.log(np.exp(lp[:, i, p, d][:, legal]).sum(-1))[:, None]
  return lp


def _path_score(lp_s, sid, order):
  """Sum over fill steps of log p(digit order[t] | digits order[:t] known)."""
  total, pattern = 0.0, 0
  for d in order:
    total += lp_s[pattern, d, sid[d]]
    pattern |= 1 << d
  return total


def _reference(model, variables, hist, mask, sids, strategy, greedy_last=False, order=None,
               renormalize=False):
  """Exhaustive numpy ranking of every legal SID: (scores [B, S] , uniq [S, N])."""
  uniq = np.unique(sids[1:], axis=0)
  lp = _subset_log_probs(model, variables, hist, mask, uniq, renormalize)
  perms = list(itertools.permutations(range(N)))
  b, s = hist.shape[0], len(uniq)
  scores = np.full((b, s), -np.inf)
  for u in range(b):
    for i in range(s):
      if strategy == "confidence":  # best over every fill order
        scores[u, i] = max(_path_score(lp[u, i], uniq[i], p) for p in perms)
      else:
        scores[u, i] = _path_score(lp[u, i], uniq[i], order)
    if strategy == "confidence" and greedy_last:
      # Every legal 3-digit partial (best order) completes by its legal argmax.
      greedy = np.full(s, -np.inf)
      for i in range(s):
        for miss in range(N):
          part = max(_path_score(lp[u, i], uniq[i], p[:N - 1]) for p in perms if p[-1] == miss)
          others = [d for d in range(N) if d != miss]
          match = np.all(uniq[:, others] == uniq[i, others], axis=1)
          pat = sum(1 << d for d in others)
          row = lp[u, i, pat, miss]
          cands = np.flatnonzero(match)
          j = cands[np.argmax(row[uniq[cands, miss]])]
          greedy[j] = max(greedy[j], part + row[uniq[j, miss]])
      scores[u] = greedy
  return scores, uniq


def _check_against_reference(pred, scores, valid, ref, uniq, k):
  pred, scores, valid = map(np.asarray, (pred, scores, valid))
  for u in range(len(ref)):
    finite = np.isfinite(ref[u])
    order = np.argsort(-ref[u], kind="stable")[:min(k, finite.sum())]
    n_valid = len(order)
    assert valid[u].sum() == n_valid
    np.testing.assert_allclose(scores[u, :n_valid], ref[u, order], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(pred[u, :n_valid], uniq[order])


@pytest.mark.parametrize("strategy,greedy_last,renormalize", [
    ("left_to_right", False, False), ("random", False, False), ("confidence", False, False),
    ("confidence", True, False), ("left_to_right", False, True), ("confidence", False, True)])
def test_matches_exhaustive_enumeration(strategy, greedy_last, renormalize):
  rng = np.random.default_rng(0)
  model = _model()
  variables = _variables(model, 0)
  sids = _catalogue_sids(rng, 20)
  cat = catalogue_lib.Catalogue.from_sids(sids, C)
  hist, mask = _history(rng, 3)
  k = 10
  dec = decoders.make_decoder(model, cat, decoding.SearchSettings(
      strategy, widths=(128,) * N, top_k=k, greedy_last=greedy_last, order_seed=3,
      renormalize_legal=renormalize))
  pred, scores, valid = jax.jit(dec)(variables, hist, mask)
  ref, uniq = _reference(model, variables, hist, mask, sids, strategy, greedy_last,
                         order=dec.settings.order, renormalize=renormalize)
  if strategy == "random":
    assert dec.settings.order != tuple(range(N))  # seed 3 draws a non-trivial order
  _check_against_reference(pred, scores, valid, ref, uniq, k)


def test_autoregressive_left_to_right_matches_enumeration():
  rng = np.random.default_rng(1)
  model = _model("autoregressive")
  variables = _variables(model, 1)
  sids = _catalogue_sids(rng, 20)
  cat = catalogue_lib.Catalogue.from_sids(sids, C)
  hist, mask = _history(rng, 2)
  dec = decoders.make_decoder(model, cat, decoding.SearchSettings("left_to_right", (128,) * N))
  pred, scores, valid = jax.jit(dec)(variables, hist, mask)
  uniq = np.unique(sids[1:], axis=0)
  enc = model.apply(variables, hist, mask, method="encode")
  codes = jnp.broadcast_to(uniq, (2,) + uniq.shape)
  lp = np.asarray(jax.nn.log_softmax(model.apply(
      variables, enc, mask, codes, jnp.zeros(codes.shape, bool), method="decode"), -1))
  ref = np.take_along_axis(lp, np.asarray(codes)[..., None], -1)[..., 0].sum(-1)
  _check_against_reference(pred, scores, valid, ref, uniq, 10)
  with pytest.raises(ValueError, match="left_to_right"):
    decoders.make_decoder(model, cat, decoding.SearchSettings("confidence", (8,) * N))


def test_legal_mask_matches_brute_force():
  rng = np.random.default_rng(2)
  sids = _catalogue_sids(rng, 30)
  cat = catalogue_lib.Catalogue.from_sids(sids, C)
  items = sids[1:]
  codes = rng.integers(0, C, size=(400, N))
  codes[:200] = items[rng.integers(0, len(items), 200)]  # half are prefixes of real items
  known = rng.random((400, N)) < 0.5
  known[:, rng.integers(0, N)] = False
  got = np.asarray(catalogue_lib.legal_mask(cat.tables(), jnp.asarray(codes), jnp.asarray(known), N, C))
  for i in range(len(codes)):
    match = np.all((items == codes[i]) | ~known[i], axis=1)
    want = np.zeros((N, C), bool)
    for d in np.flatnonzero(~known[i]):
      want[d, items[match, d]] = True
    np.testing.assert_array_equal(got[i], want)


def test_never_returns_illegal_or_duplicate_sids():
  c = 16
  model = _model(c=c)
  rng = np.random.default_rng(10)
  configs = [("confidence", 4, False), ("confidence", 3, True), ("left_to_right", 5, False),
             ("random", 2, False)]
  cat0 = catalogue_lib.Catalogue.from_sids(_catalogue_sids(rng, 5, c=c), c)
  # One compiled function per strategy; catalogues padded to one table size.
  searches = [(cfg, jax.jit(decoders.make_decoder(model, cat0, decoding.SearchSettings(
      cfg[0], widths=(cfg[1],) * N, top_k=10, greedy_last=cfg[2], order_seed=1)).apply))
      for cfg in configs]
  for trial in range(6):
    variables = _variables(model, trial)
    # Partial-prefix traps: few items, so most partial combinations have no completion.
    sids = _catalogue_sids(rng, int(rng.integers(3, 25)), c=c, n_collide=2)
    cat = catalogue_lib.Catalogue.from_sids(sids, c)
    tables = padded_tables(cat, 512)
    legal = {tuple(s) for s in sids[1:]}
    hist, mask = _history(rng, 4, c=c)
    for cfg, dec in searches:
      pred, scores, valid = map(np.asarray, dec(variables, tables, hist, mask))
      assert valid.any(axis=1).all(), cfg  # at least one legal SID always survives
      for u in range(len(pred)):
        got = [tuple(s) for s in pred[u][valid[u]]]
        assert set(got) <= legal, cfg
        assert len(set(got)) == len(got), cfg
        assert np.all(np.diff(scores[u][valid[u]]) <= 0)
        assert np.all(np.isfinite(scores[u][valid[u]])) and np.all(~np.isfinite(scores[u][~valid[u]]))


@pytest.mark.parametrize("strategy", ["confidence", "left_to_right"])
def test_batch_equals_one_user_at_a_time(strategy):
  rng = np.random.default_rng(5)
  model = _model(c=16)
  variables = _variables(model, 5)
  cat = catalogue_lib.Catalogue.from_sids(_catalogue_sids(rng, 60, c=16), 16)
  hist, mask = _history(rng, 4, c=16)
  # beam 6 with step_beams (4, 6, 6, 5): confidence uses the beam at every step.
  widths = (6, 6, 6, 6) if strategy == "confidence" else (4, 6, 6, 5)
  dec = jax.jit(decoders.make_decoder(model, cat, decoding.SearchSettings(strategy, widths,
                                                                          top_k=5)))
  pred, scores, valid = dec(variables, hist, mask)
  for u in range(4):
    p1, s1, v1 = dec(variables, hist[u:u + 1], mask[u:u + 1])
    np.testing.assert_array_equal(p1[0], pred[u])
    np.testing.assert_array_equal(v1[0], valid[u])
    np.testing.assert_allclose(s1[0], scores[u], rtol=1e-5, atol=1e-5)


def test_catalogue_groups_and_tie_rule():
  sids = np.array([[0, 0, 0, 0], [1, 2, 3, 4], [5, 5, 5, 5], [1, 2, 3, 4], [1, 2, 3, 4]], np.int32)
  pop = np.array([0, 1, 9, 5, 5])
  cat = catalogue_lib.Catalogue.from_sids(sids, C, item_popularity=pop)
  assert cat.n_sids == 2
  assert items_of(cat, [1, 2, 3, 4]) == [3, 4, 1]  # popularity desc, then item id
  assert items_of(cat, [5, 5, 5, 5]) == [2]
  assert items_of(cat, [7, 7, 7, 7]) == []
  assert items_of(cat, [1, 2, 3, 4]) == [3, 4, 1]
  assert items_of(catalogue_lib.Catalogue.from_sids(sids, C), [1, 2, 3, 4]) == [1, 3, 4]
  pred = np.array([[[5, 5, 5, 5], [1, 2, 3, 4], [0, 0, 0, 0]]])
  np.testing.assert_array_equal(ranked_items(cat, pred, np.array([[True, True, False]]), 3),
                                [[2, 3, 4]])


@pytest.mark.parametrize("kind,strategy", [
    ("diffgrm", "confidence"), ("diffgrm", "left_to_right"), ("diffgrm", "random"),
    ("diffgrm", "release_confidence"), ("autoregressive", "left_to_right")])
def test_every_strategy_and_model_kind_resolves_the_configured_beams(kind, strategy):
  # The defaults name one beam per split; no strategy may widen it on its own (a fair
  # comparison between DIFF_GRM and the baseline searches with the same widths).
  from support.configs import make_config
  c = make_config(**{"decode.valid_beam": 24, "decode.test_beam": 48,
                     "model.kind": kind, "decode.strategy": strategy})
  config_checks.check_config(c)
  assert decoding.SearchSettings.from_config(c, "valid").widths == (24,) * 4
  assert decoding.SearchSettings.from_config(c, "test").widths == (48,) * 4
  base = make_config(**{"decode.valid_beam": 24, "decode.test_beam": 48})
  for split in ("valid", "test"):  # DIFF_GRM's default search and this one: same widths
    assert (decoding.SearchSettings.from_config(base, split).widths
            == decoding.SearchSettings.from_config(c, split).widths)


def test_decode_settings_resolve_the_split_widths_like_the_config_says():
  from support.configs import make_config
  c = make_config(**{"decode.valid_beam": 32, "decode.test_beam": 256,
                     "decode.step_beams": (16, 64, 64, 64), "decode.strategy": "confidence"})
  assert decoding.SearchSettings.from_config(c, "valid").widths == (32,) * 4
  assert decoding.SearchSettings.from_config(c, "test").widths == (256,) * 4
  assert decoding.SearchSettings.from_config(c, "test", beam=20).widths == (20,) * 4
  c.decode.strategy = "left_to_right"  # fixed orders take step_beams, whatever the split
  assert decoding.SearchSettings.from_config(c, "valid").widths == (16, 64, 64, 64)
  c.decode.step_beams = ()
  assert decoding.SearchSettings.from_config(c, "valid").widths == (32,) * 4
  s = decoding.SearchSettings.from_config(c, "test")
  assert s == decoding.SearchSettings.from_config(c, "test") and hash(s) == hash(
      decoding.SearchSettings.from_config(c, "test"))  # usable as a cache key
  with pytest.raises(ValueError, match="must be one of"):
    decoding.SearchSettings("nope", (4,) * 4)


def test_decode_batch_size_zero_is_the_backends_default():
  from diffgrm_jax import defaults  # pylint: disable=import-outside-toplevel
  c = defaults.get_config()
  assert c.decode.batch_size == 0
  assert decoding.batch_size(c, platform="cpu") == 256
  assert decoding.batch_size(c, platform="gpu") == decoding.batch_size(c, platform="tpu") == 1024
  c.decode.batch_size = 96
  assert decoding.batch_size(c, platform="gpu") == 96
  assert decoding.SearchSettings.from_config(c, "test").batch_size == 96
