"""grain pipelines: coverage per epoch, fixed shapes per bucket, resumable state, sharding."""

import collections

import numpy as np
import pytest

from support.data import base_config
from diffgrm_jax.data import eval_batches
from diffgrm_jax.data import DataError
from diffgrm_jax.data import prepare_data
from diffgrm_jax.data import read_options
from diffgrm_jax.data import train_loader

BUCKETS = (8, 16, 32, 50)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  c = base_config(tmp_path_factory.mktemp("cache"))
  s = c.data.synthetic
  s.n_users, s.n_items, s.min_len, s.max_len = 150, 80, 5, 60
  return prepare_data(c, verbose=False)


def _row_keys(data, batch):
  """(user?, target, history tuple) per real row, recovered from SIDs -> identity check."""
  keep = batch["weight"] > 0
  return [(int(t), tuple(map(tuple, h[m]))) for t, h, m in
          zip(batch["target_item"][keep], batch["hist_sids"][keep], batch["hist_mask"][keep])]


def test_every_training_row_once_per_epoch(data):
  loader = train_loader(data, batch_size=64, seed=3, process_index=0, process_count=1)
  tr = data.train
  expected = collections.Counter(
      (int(t), tuple(map(tuple, data.sids[h[:n]]))) for h, n, t in
      zip(tr.hist, tr.length, tr.target))
  lengths = set(np.minimum(tr.length, 50).tolist())
  assert max(lengths) > 16  # the data spans several buckets
  for epoch in range(2):
    seen, shapes = collections.Counter(), set()
    for step in range(loader.steps_per_epoch):
      b = next(loader)
      assert b["epoch"] == epoch and b["step_in_epoch"] == step
      lb = b["hist_sids"].shape[1]
      assert lb in BUCKETS and b["hist_sids"].shape == (64, lb, 4)
      assert b["hist_mask"].shape == (64, lb) and b["target_sid"].shape == (64, 4)
      assert b["hist_sids"].dtype == np.int32 and b["weight"].dtype == np.float32
      real = b["hist_mask"].sum(1)
      assert (real >= 1).all() and (real <= lb).all()
      # Each batch draws from one bucket: the longest real history fits Lb, not a smaller one.
      smaller = [x for x in BUCKETS if x < lb]
      assert not smaller or real[b["weight"] > 0].max() > max(smaller)
      assert (b["hist_sids"][~b["hist_mask"]] == 0).all()
      np.testing.assert_array_equal(b["target_sid"], data.sids[b["target_item"]])
      shapes.add(lb)
      seen.update(_row_keys(data, b))
    assert seen == expected
    assert len(shapes) > 1


def test_epoch_order_depends_on_seed_and_epoch_only(data):
  a = train_loader(data, batch_size=64, seed=3, process_index=0, process_count=1)
  b = train_loader(data, batch_size=64, seed=3, process_index=0, process_count=1)
  c = train_loader(data, batch_size=64, seed=4, process_index=0, process_count=1)
  rows_a, _ = a.plan(1)
  np.testing.assert_array_equal(rows_a, b.plan(1)[0])
  assert not np.array_equal(rows_a, a.plan(0)[0])
  assert not np.array_equal(rows_a, c.plan(1)[0])


def test_state_resumes_exactly(data):
  ref = train_loader(data, batch_size=32, seed=7, process_index=0, process_count=1)
  k = ref.steps_per_epoch + 3  # resume across an epoch boundary
  expected = [next(ref) for _ in range(k + 5)][k:]
  first = train_loader(data, batch_size=32, seed=7, process_index=0, process_count=1)
  for _ in range(k):
    next(first)
  state = first.get_state()
  import json  # pylint: disable=g-import-not-at-top
  state = json.loads(json.dumps(state))
  restored = train_loader(data, batch_size=32, seed=7, process_index=0, process_count=1)
  restored.set_state(state)
  for want in expected:
    got = next(restored)
    assert got.keys() == want.keys()
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_read_ahead_changes_neither_batches_nor_state(data):
  """One thread holding one batch, or eight holding 64 (batches built out of order): the
  same batches, and a state saved under one resumes under the other."""
  kw = dict(batch_size=32, seed=7, process_index=0, process_count=1)
  slow = train_loader(data, options=read_options(1, 1), **kw)
  fast = train_loader(data, options=read_options(8, 64), **kw)
  assert fast.options.num_threads == 8 and fast.options.prefetch_buffer_size == 64
  k = slow.steps_per_epoch + 2
  for _ in range(k):
    a, b = next(slow), next(fast)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  resumed = train_loader(data, options=read_options(1, 1), **kw)
  resumed.set_state(fast.get_state())
  for _ in range(3):
    a, b = next(resumed), next(slow)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_read_options_per_backend():
  cpu, gpu = read_options(platform="cpu"), read_options(platform="gpu")
  assert (cpu.num_threads, cpu.prefetch_buffer_size) == (2, 8)
  assert (gpu.num_threads, gpu.prefetch_buffer_size) == (16, 128)
  mixed = read_options(3, 0, platform="tpu")  # a given count is kept, the other filled in
  assert (mixed.num_threads, mixed.prefetch_buffer_size) == (3, 128)
  with pytest.raises(DataError, match="data.read_threads=-1"):
    read_options(-1, 0)


def test_two_processes_cover_the_global_batch(data):
  full = train_loader(data, batch_size=64, seed=1, process_index=0, process_count=1)
  p0 = train_loader(data, batch_size=64, seed=1, process_index=0, process_count=2)
  p1 = train_loader(data, batch_size=64, seed=1, process_index=1, process_count=2)
  for _ in range(full.steps_per_epoch):
    g, a, b = next(full), next(p0), next(p1)
    assert a["hist_sids"].shape[0] == 32
    for key in ("hist_sids", "hist_mask", "target_sid", "target_item", "weight"):
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), g[key])
  with pytest.raises(ValueError, match="not divisible by process_count 3"):
    train_loader(data, batch_size=64, seed=1, process_index=0, process_count=3)


@pytest.mark.parametrize("split", ["valid", "test"])
def test_eval_covers_every_user_once(data, split):
  rows = getattr(data, split)
  users = []
  for pi in range(2):
    for b in eval_batches(data, split, batch_size=32, process_index=pi, process_count=2):
      assert b["hist_sids"].shape[0] == 16 and b["hist_sids"].shape[1] in BUCKETS
      real = b["weight"] > 0
      assert (b["user"][~real] == -1).all()
      np.testing.assert_array_equal(b["target_item"][real], rows.target[b["user"][real]])
      users += b["user"][real].tolist()
  assert sorted(users) == list(range(data.n_users))
  again = [b["user"] for b in eval_batches(data, split, batch_size=32, process_index=0,
                                           process_count=2)]
  first = [b["user"] for b in eval_batches(data, split, batch_size=32, process_index=0,
                                           process_count=2)]
  assert all(np.array_equal(x, y) for x, y in zip(again, first))


def test_sequence_rows_cover_every_training_position_once_per_epoch(data):
  """SASRec's loader: one row per user with two or more training items, `items` its
  training sequence (the last max_history_len + 1 items without the last), `targets` the
  item after each, inputs exactly where there is a next item, and an epoch yields every (user, position, next item) exactly once."""
  loader = train_loader(data, batch_size=16, seed=3, buckets=(8, 16, 32, 50), sequences=True)
  want = collections.Counter()
  for seq in data.sequences:
    train = list(seq[:-2])[-(50 + 1):]
    if len(train) >= 2:
      want.update((tuple(train[:t + 1]), train[t + 1]) for t in range(len(train) - 1))
  got = collections.Counter()
  for _ in range(loader.steps_per_epoch):
    b = next(loader)
    assert set(b) >= {"items", "targets", "weight"} and b["items"].shape == b["targets"].shape
    for items, targets, w in zip(b["items"], b["targets"], b["weight"]):
      n = int((items > 0).sum())
      # An input is a position with a next item, no more: the row's last item is not an
      # input (it would shift every position of SASRec's count from the most recent item
      # by one against evaluation, where the history's last item is position 0).
      np.testing.assert_array_equal(items > 0, targets > 0)
      assert (items[n:] == 0).all() and (targets[n:] == 0).all()
      np.testing.assert_array_equal(items[1:n], targets[:n - 1])  # targets: one step on
      if w:
        got.update((tuple(int(i) for i in items[:t + 1]), int(targets[t])) for t in range(n)
                   if targets[t])
  assert got == want and len(want) > 500
  assert next(loader)["epoch"] == 1
