"""Full ranking of the item-scoring kinds (SASRec) against numpy brute force: exact item and
SID ranks with ties, the evaluation's metrics and its top-10 lists on the demo data."""

import flax.linen as nn
import jax
import numpy as np

from support.configs import load_config_file
from diffgrm_jax import data as data_lib
from diffgrm_jax.evaluation import item_scores
from diffgrm_jax.evaluation import metrics
from diffgrm_jax.model import factory
from diffgrm_jax.sid import catalogue as catalogue_lib


def brute_ranks(scores, target, item_group):
  """(item rank, SID rank) by sorting: items by (-score, id), then SIDs de-duplicated in
  that order; item 0 never ranked."""
  item_rank, sid_rank = [], []
  for s, t in zip(scores, target):
    ids = np.arange(1, len(s))
    order = ids[np.lexsort((ids, -s[1:]))]
    item_rank.append(int(np.flatnonzero(order == t)[0]))
    _, first = np.unique(item_group[order], return_index=True)
    groups = item_group[order][np.sort(first)]
    sid_rank.append(int(np.flatnonzero(groups == item_group[t])[0]))
  return np.array(item_rank), np.array(sid_rank)


def test_exact_ranks_equal_brute_force_with_ties():
  rng = np.random.default_rng(0)
  n_items, n_groups, b = 50, 17, 64
  item_group = np.concatenate([[-1], rng.integers(0, n_groups, n_items)]).astype(np.int32)
  item_group[1:n_groups + 1] = np.arange(n_groups)  # every group has an item
  scores = rng.integers(0, 6, (b, n_items + 1)).astype(np.float32)  # many ties
  scores[:, 0] = -np.inf
  target = rng.integers(1, n_items + 1, b)
  got = item_scores.exact_ranks(scores, target, item_group, n_groups)
  want = brute_ranks(scores, target, item_group)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])
  assert len(set(want[1])) > 3 and len(set(want[0])) > 10  # the ranks vary


def test_evaluation_equals_numpy_brute_force_on_the_demo(tmp_path):
  config = load_config_file("sasrec.py", "demo")
  config.data.cache_dir = str(tmp_path)
  config.data.synthetic.n_users = 300
  data = data_lib.prepare_data(config, verbose=False)
  model = factory.from_config(config, n_items=data.n_items)
  params = nn.meta.unbox(model.init(jax.random.key(3), *model.example_inputs()))
  table = np.asarray(params["params"]["item_embedding"]).copy()
  table[7], table[9] = table[5], table[5]  # three items always tie
  params = {"params": dict(params["params"], item_embedding=table)}
  cat = catalogue_lib.Catalogue.from_sids(data.sids, config.sid.codebook_size,
                                          item_popularity=data.item_train_counts)
  for exclude in (False, True):
    batches = list(data_lib.eval_batches(data, "test", batch_size=64, buckets=(8, 20)))
    out = item_scores.evaluate(params, model, cat, batches, exclude_history=exclude,
                               progress=False, keep_items=True)
    # Brute force: the last real state of every history against the table, in numpy.
    s = data.test
    states = np.asarray(model.apply(params, s.hist, s.hist > 0))
    last = states[np.arange(len(s)), s.length - 1]
    scores = last @ table.T
    scores[:, 0] = -np.inf
    if exclude:
      for r in range(len(s)):
        scores[r, s.hist[r, :s.length[r]]] = -np.inf
    item_rank, sid_rank = brute_ranks(scores, s.target, cat.item_group)
    for level, ranks in (("item", item_rank), ("sid", sid_rank)):
      for k, v in metrics.recall_ndcg(ranks).items():
        np.testing.assert_allclose(out[f"{level}/{k}"], v, rtol=1e-6, err_msg=(exclude, level, k))
    assert out["n_users"] == len(s)
    for r in range(len(s)):
      ids = np.arange(1, data.n_items + 1)
      want = ids[np.lexsort((ids, -scores[r, 1:]))][:10]
      assert out["ranked_items"][int(s.user[r])] == list(want), r
