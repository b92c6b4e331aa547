"""Tests of evaluation/metrics.py (hand-worked values) and evaluation/evaluate.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen import meta

from support.catalogue_reference import items_of, ranked_items
from diffgrm_jax.decoding import settings as decoding
from diffgrm_jax.evaluation import evaluate as evaluation
from diffgrm_jax.evaluation import metrics
from diffgrm_jax.sid import catalogue as catalogue_lib
from support.tiny import tiny_model

N = 4


def _sid(i):
  return [i, i, i, i]


def test_sid_level_hits_at_1_5_10_and_miss():
  pred = np.array([[_sid(r) for r in range(10)]] * 4)  # SID r at 0-based rank r
  valid = np.ones((4, 10), bool)
  valid[3, 2] = False  # an invalid slot that equals the target is no hit
  target = np.array([_sid(0), _sid(4), _sid(9), _sid(2)])
  ranks = metrics.sid_ranks(pred, valid, target)
  np.testing.assert_array_equal(ranks, [0, 4, 9, metrics.MISS])
  m = metrics.recall_ndcg(ranks)
  assert m["recall@5"] == pytest.approx(2 / 4)
  assert m["ndcg@5"] == pytest.approx((1 + 1 / np.log2(6)) / 4)
  assert m["recall@10"] == pytest.approx(3 / 4)
  assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(6) + 1 / np.log2(11)) / 4)
  # Padding rows (weight 0) are ignored.
  m2 = metrics.recall_ndcg(np.append(ranks, 0), weights=[1, 1, 1, 1, 0])
  assert m2 == pytest.approx(m)


def test_item_level_expands_collision_groups_in_tie_order():
  # Items 1..5; items 1 and 3 share SID 7 (3 is more popular); 5 shares SID 6 with 4, 2.
  sids = np.array([[0] * 4, _sid(7), _sid(2), _sid(7), _sid(6), _sid(6)], np.int32)
  pop = np.array([0, 1, 0, 5, 3, 3])
  cat = catalogue_lib.Catalogue.from_sids(sids, 8, item_popularity=pop)
  assert items_of(cat, _sid(7)) == [3, 1]
  assert items_of(cat, _sid(6)) == [4, 5]
  pred = np.array([[_sid(2), _sid(7), _sid(6), _sid(0), _sid(1)]] * 4)
  valid = np.ones((4, 5), bool)
  target_item = np.array([1, 3, 5, 2])
  groups = np.where(valid, cat.sid_group(pred), -1)
  assert groups[0, 3] == -1  # SID (0,0,0,0) holds no item
  ranks = metrics.item_ranks(groups, np.diff(cat.group_offsets), target_item,
                             cat.item_group, cat.item_rank_in_group)
  # Expanded list: [2, 3, 1, 4, 5] -> item 1 at rank 2, item 3 at 1, item 5 at 4, item 2 at 0.
  np.testing.assert_array_equal(ranks, [2, 1, 4, 0])
  np.testing.assert_array_equal(ranked_items(cat, pred[:1], valid[:1], 5), [[2, 3, 1, 4, 5]])
  m = metrics.recall_ndcg(ranks, ks=(2, 5))
  assert m["recall@2"] == pytest.approx(2 / 4)
  assert m["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1) / 4)
  assert m["ndcg@5"] == pytest.approx((0.5 + 1 / np.log2(3) + 1 / np.log2(6) + 1) / 4)
  # SID level counts the collision as a hit for item 1 (rank 1), not for item 5 ... (rank 2).
  sid_r = metrics.sid_ranks(pred, valid, sids[target_item])
  np.testing.assert_array_equal(sid_r, [1, 1, 2, 0])
  # A group pushed past K: expanded rank 5 is a miss at K=5 although its SID is at rank 3.
  big = np.array([[cat.sid_group(_sid(6)), cat.sid_group(_sid(7)), -1]])
  r2 = metrics.item_ranks(big, np.diff(cat.group_offsets), np.array([1]), cat.item_group,
                          cat.item_rank_in_group)
  assert r2[0] == 3 and metrics.recall_ndcg(r2, ks=(3,))["recall@3"] == 0.0


def test_popularity_baseline():
  # Items 1..4; counts 2, 9, 9, 1; items 2 and 3 share a SID.
  sids = np.array([[0] * 4, _sid(1), _sid(2), _sid(2), _sid(4)], np.int32)
  counts = np.array([100, 2, 9, 9, 1])  # row 0 (padding) never recommended
  np.testing.assert_array_equal(metrics.popularity_ranking(counts, 4), [2, 3, 1, 4])
  out = metrics.popularity_baseline(counts, sids, np.array([3, 1, 4]), ks=(1, 2))
  # Items: [2, 3, 1, 4] -> target 3 at rank 1, target 1 at rank 2 (miss@2), 4 miss.
  assert out["item/recall@2"] == pytest.approx(1 / 3)
  assert out["item/ndcg@2"] == pytest.approx(1 / np.log2(3) / 3)
  # SIDs: [S2, S1, S4] -> target 3 (S2) rank 0, target 1 (S1) rank 1, 4 (S4) rank 2.
  assert out["sid/recall@1"] == pytest.approx(1 / 3)
  assert out["sid/recall@2"] == pytest.approx(2 / 3)
  assert out["sid/ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 3)


def _tiny():
  model = tiny_model(n_digit=N, codebook_size=8, n_dec_layers=1, max_history_len=16)
  v = meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4, N), jnp.int32),
                                     jnp.ones((1, 4), bool), jnp.zeros((1, 1, N), jnp.int32),
                                     jnp.zeros((1, 1, N), bool)))
  v = jax.tree.map(lambda x: 10 * x, v)  # sharper distributions
  return model, v


def test_evaluate_matches_direct_computation_and_ignores_padding():
  rng = np.random.default_rng(0)
  model, v = _tiny()
  sids = rng.integers(0, 8, size=(41, N)).astype(np.int32)
  sids[5] = sids[6]  # a collision group
  cat = catalogue_lib.Catalogue.from_sids(sids, 8, item_popularity=rng.integers(0, 5, 41))
  batches, rows = [], []
  for lb, n_real in ((4, 5), (8, 3)):  # two bucket lengths, padded to 6 rows each
    hist = rng.integers(0, 8, size=(6, lb, N)).astype(np.int32)
    mask = np.arange(lb)[None] < rng.integers(1, lb + 1, size=(6, 1))
    item = rng.integers(1, 41, size=6)
    item[1], item[2] = 5, 6
    weight = (np.arange(6) < n_real).astype(np.float32)
    batches.append(dict(hist_sids=hist, hist_mask=mask, target_sid=sids[item], target_item=item,
                        weight=weight, user=np.where(weight > 0, np.arange(6), -1)))
  settings = decoding.SearchSettings("confidence", widths=(16,) * N, top_k=10)
  ranking_settings = decoding.RankingSettings()
  fn, tables = evaluation.compiled_decoder(model, cat, settings)
  for b in batches:
    pred, _, valid = map(np.asarray, fn(v, tables, b["hist_sids"], b["hist_mask"]))
    keep = b["weight"] > 0
    rows.append((pred[keep], valid[keep], b["target_sid"][keep], b["target_item"][keep]))
  pred, valid, tsid, titem = (np.concatenate(x) for x in zip(*rows))
  want_sid = metrics.recall_ndcg(metrics.sid_ranks(pred, valid, tsid))
  items = ranked_items(cat, pred, valid, 10)
  hit = items == titem[:, None]
  want_item = metrics.recall_ndcg(np.where(hit.any(1), hit.argmax(1), metrics.MISS))
  assert 0 < want_sid["recall@10"] < 1 and want_item["recall@10"] <= want_sid["recall@10"]
  got = evaluation.evaluate(v, model, cat, batches, settings, ranking_settings, progress=False)
  assert got["n_users"] == 8
  for k, val in want_sid.items():
    assert got[f"sid/{k}"] == pytest.approx(val)
  for k, val in want_item.items():  # the whole-group expansion (item/ is the 'score' ranking)
    assert got[f"item_expand/{k}"] == pytest.approx(val)
  # The same through a (one-device) mesh with a batch sharding (one batch: one compile).
  want = evaluation.evaluate(v, model, cat, batches[:1], settings, ranking_settings,
                             progress=False)
  mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  # Validation's SID level on the device equals evaluate's (padding rows left out).
  device = [tuple(jnp.asarray(b[k]) for k in ("hist_sids", "hist_mask", "target_sid", "weight"))
            for b in batches]
  on_device = evaluation.validate(v, model, cat, device, settings)
  assert set(on_device) == {"n_users"} | {k for k in got if k.startswith("sid/")}
  for k, val in on_device.items():
    assert val == pytest.approx(got[k], rel=1e-12, abs=1e-15), k
  got2 = evaluation.evaluate(v, model, cat, batches[:1], settings, ranking_settings,
                             mesh=mesh, batch_sharding=sharding, progress=False)
  assert got2 == pytest.approx(want)
  sharded = [tuple(jax.device_put(x, sharding) for x in b) for b in device[:1]]
  one = evaluation.validate(v, model, cat, sharded, settings, mesh=mesh)
  for k, val in one.items():
    assert val == pytest.approx(want[k], rel=1e-12, abs=1e-15), k
