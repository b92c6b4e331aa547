"""grain input pipelines: length-bucketed training batches and ordered evaluation batches.

Batch plan. Rows are grouped by history length into buckets (the smallest bucket >= the
length; buckets are capped at max_history_len, which is always a bucket). In epoch e,
with a generator seeded by (seed, e) only, rows are shuffled within each bucket, cut
into batches of `batch_size` per bucket, and the order of all batches is shuffled. So
each batch has one padded history length Lb and only len(buckets) shapes are compiled.

Partial batches: the last batch of each bucket is kept and padded to the full batch
size with weight-0 rows. A padding row repeats the batch's first real row (so every row
has at least one real history item: no all-masked attention) with weight 0 (and user
-1 in evaluation batches); losses and metrics must be weighted by 'weight'.

Multi-process: every process computes the same global plan and yields its contiguous
slice of batch_size // process_count rows of each global batch.

SASRec's loader (`SequenceLoader`) follows the same plan over other rows: one per user,
the whole training sequence, bucketed by its length.

Read-ahead. grain threads build the next batches while the step runs (`read_options`). A
batch depends only on its index, so the thread count and buffer never change the batches
or the iterator state a checkpoint records.
"""

import grain
import numpy as np

from diffgrm_jax.data import protocol
from diffgrm_jax.data.errors import DataError


# (threads, batches held) for data.read_threads / data.prefetch = 0. On CPU the step itself
# uses every core and a batch takes milliseconds to build against a step's tens or hundreds,
# so two threads and a short buffer keep up without taking cores from it. On GPU/TPU the
# host's cores are free and steps are a few milliseconds (several per call with
# train.steps_per_call), so more threads and a buffer of a few calls' worth of batches.
READ_OPTIONS = {"cpu": (2, 8), "accelerator": (16, 128)}


def read_options(read_threads=0, prefetch=0, platform=None) -> grain.ReadOptions:
  """grain.ReadOptions for the training loader: the given counts, or for 0 the backend's
  `READ_OPTIONS` (`platform` defaults to JAX's backend)."""
  if read_threads < 0 or prefetch < 0:
    raise DataError(f"data.read_threads={read_threads} and data.prefetch={prefetch} must be "
                    ">= 0 (0 = the backend's default)")
  if not (read_threads and prefetch):
    if platform is None:
      import jax  # pylint: disable=g-import-not-at-top
      platform = jax.default_backend()
    auto = READ_OPTIONS["cpu" if platform == "cpu" else "accelerator"]
    read_threads, prefetch = read_threads or auto[0], prefetch or auto[1]
  return grain.ReadOptions(num_threads=int(read_threads), prefetch_buffer_size=int(prefetch))


def _process(process_index, process_count, batch_size):
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if batch_size % process_count:
    raise DataError(f"batch_size {batch_size} is not divisible by process_count "
                    f"{process_count}.")
  per = batch_size // process_count
  return slice(process_index * per, (process_index + 1) * per)


def bucket_edges(buckets, max_len: int) -> np.ndarray:
  """Sorted bucket lengths capped at max_len, with max_len always last."""
  edges = sorted({min(int(b), max_len) for b in buckets} | {max_len})
  return np.asarray(edges, np.int32)


def assign_buckets(length: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """Index into edges of the smallest bucket >= each length."""
  return np.searchsorted(edges, length, side="left")


def _batches_of(rows, batch_size):
  n = -(-len(rows) // batch_size)
  out = np.full((n, batch_size), -1, np.int64)
  out.reshape(-1)[:len(rows)] = rows
  return out


def _gather(data, split, global_rows, sl, lb):
  """Batch dict for this process's slice `sl` of a global batch of row indices (-1 = padding)
  with histories padded to lb."""
  first = global_rows[global_rows >= 0][0]
  rows = global_rows[sl]
  valid = rows >= 0
  idx = np.where(valid, rows, first)
  hist = split.hist[idx, :lb]
  return {
      "hist_sids": data.sids[hist],
      "hist_items": hist,
      "hist_mask": hist > 0,
      "target_sid": data.sids[split.target[idx]],
      "target_item": split.target[idx],
      "weight": valid.astype(np.float32),
  }


class TrainLoader:
  """Infinite iterator of training batches; state = grain iterator state (JSON-able)."""

  def __init__(self, data, *, batch_size, seed, buckets=(8, 16, 32, 50),
               process_index=None, process_count=None, options=None):
    self._data = data
    self._split = self._rows(data)
    self._slice = _process(process_index, process_count, batch_size)
    self._batch_size = int(batch_size)
    self._seed = int(seed)
    self._edges = bucket_edges(buckets, int(data.train.hist.shape[1]))
    which = assign_buckets(self._lengths(), self._edges)
    self._members = [np.flatnonzero(which == b) for b in range(len(self._edges))]
    self._plans = {}
    self.steps_per_epoch = int(sum(-(-len(m) // batch_size) for m in self._members))
    if self.steps_per_epoch == 0:
      raise DataError(f"dataset {data.name!r} has no training rows.")
    ds = grain.MapDataset.range(self.steps_per_epoch).repeat(None)
    self._dataset = ds.map_with_index(self._load)
    self.options = options or read_options()
    self._iter = iter(self._dataset.to_iter_dataset(self.options))

  @property
  def edges(self):
    """The history lengths of the buckets, ascending: every batch is one of these wide."""
    return tuple(int(e) for e in self._edges)

  def _rows(self, data):
    """The split the batches are drawn from."""
    return data.train

  def _lengths(self):
    """Per row, the history length its bucket is chosen by."""
    return self._split.length

  def _batch(self, global_rows, lb):
    return _gather(self._data, self._split, global_rows, self._slice, lb)

  def example_batches(self):
    """{width: a batch of that width} for every bucket with training rows (its first
    rows): the shapes the train step is compiled for ahead of time."""
    out = {}
    for b, members in enumerate(self._members):
      if len(members):
        rows = _batches_of(members[:self._batch_size], self._batch_size)[0]
        out[int(self._edges[b])] = self._batch(rows, int(self._edges[b]))
    return out

  def plan(self, epoch: int):
    """(rows int64 [steps, batch_size] with -1 padding, bucket index [steps]) of an epoch."""
    plans = self._plans  # read once: read-ahead threads may replace it meanwhile
    if epoch not in plans:
      plans = {epoch: self._make_plan(epoch)}
      # Two epochs kept: threads building the end of one and the start of the next.
      self._plans = {**{e: p for e, p in self._plans.items() if e == epoch - 1}, **plans}
    return plans[epoch]

  def _make_plan(self, epoch: int):
    rng = np.random.default_rng([self._seed, epoch])
    rows, bucket = [], []
    for b, members in enumerate(self._members):
      if len(members):
        batches = _batches_of(rng.permutation(members), self._batch_size)
        rows.append(batches)
        bucket.append(np.full(len(batches), b))
    rows, bucket = np.concatenate(rows), np.concatenate(bucket)
    order = rng.permutation(len(rows))
    return rows[order], bucket[order]

  def _load(self, index, step):
    epoch = index // self.steps_per_epoch
    rows, bucket = self.plan(epoch)
    batch = self._batch(rows[step], int(self._edges[bucket[step]]))
    batch["epoch"], batch["step_in_epoch"] = int(epoch), int(step)
    return batch

  def __iter__(self):
    return self

  def __next__(self):
    return next(self._iter)

  def get_state(self) -> dict:
    return dict(self._iter.get_state())

  def set_state(self, state: dict):
    self._iter.set_state(dict(state))


class SequenceLoader(TrainLoader):
  """SASRec's training batches: one row per user (`protocol.sequence_split`), bucketed by
  its input length; keys 'items' (the sequence without its last item) and 'targets' (the
  next item at each position, 0 = none) int32 [b, Lb], 'weight' [b]. Same plan, padding,
  process slices and state as `TrainLoader`."""

  def _rows(self, data):
    rows = protocol.sequence_split(data.sequences, int(data.train.hist.shape[1]))
    if not len(rows):
      raise DataError(f"dataset {data.name!r}: no user has two training items.")
    return rows

  def _lengths(self):
    return self._split.length - 1

  def _batch(self, global_rows, lb):
    first = global_rows[global_rows >= 0][0]
    rows = global_rows[self._slice]
    valid = rows >= 0
    seq = self._split.hist[np.where(valid, rows, first), :lb + 1]
    targets = seq[:, 1:]
    # A row shorter than lb + 1 has its last item inside seq[:, :-1]: drop it there (it has
    # no next item), so the input holds length - 1 items and every position counts from the
    # last input as at evaluation (model/sasrec.py: positions count from the most recent
    # item; left in, it would shift them all by one and the state that predicts would never
    # sit at position 0, the one every evaluation reads).
    items = np.where(targets > 0, seq[:, :-1], 0)
    return {"items": items, "targets": targets, "weight": valid.astype(np.float32)}


def train_loader(data, *, batch_size: int, seed: int, buckets=(8, 16, 32, 50),
                 process_index=None, process_count=None, sequences=False,
                 options=None) -> TrainLoader:
  """Training batches, epoch after epoch (see module docstring); `sequences`: SASRec's
  (`SequenceLoader`); `options`: grain.ReadOptions (default: `read_options()`)."""
  cls = SequenceLoader if sequences else TrainLoader
  return cls(data, batch_size=batch_size, seed=seed, buckets=buckets,
             process_index=process_index, process_count=process_count, options=options)


def eval_batches(data, split: str, *, batch_size: int, buckets=(8, 16, 32, 50),
                 process_index=None, process_count=None):
  """Deterministic batches of the 'valid' or 'test' split covering every user once.

  Rows are ordered by bucket then by row index; each bucket's last batch is padded with
  weight-0 rows (user -1). Keys as in training plus 'user' int32 [b].
  """
  if split not in ("valid", "test"):
    raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
  rows_split = getattr(data, split)
  sl = _process(process_index, process_count, batch_size)
  edges = bucket_edges(buckets, rows_split.hist.shape[1])
  which = assign_buckets(rows_split.length, edges)
  plan = []
  for b in range(len(edges)):
    for rows in _batches_of(np.flatnonzero(which == b), batch_size):
      plan.append((rows, int(edges[b])))

  def load(item):
    global_rows, lb = item
    batch = _gather(data, rows_split, global_rows, sl, lb)
    rows = global_rows[sl]
    batch["user"] = np.where(rows >= 0, rows_split.user[np.maximum(rows, 0)], -1).astype(
        np.int32)
    return batch

  return grain.MapDataset.source(plan).map(load)
