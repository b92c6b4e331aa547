"""Evaluation protocol: leave-one-out splits and sliding training rows (docs/data.md, Splits;
Training rows)."""

import dataclasses

import numpy as np

from diffgrm_jax.data.errors import DataError

# Training targets stop at this 0-based position (t <= min(len-3, 50); docs/data.md, Training rows).
MAX_TARGET_POS = 50


@dataclasses.dataclass
class Split:
  """Rows of (history, target). hist is left-aligned (oldest kept item at index 0)."""
  hist: np.ndarray    # int32 [N, max_history_len], 0-padded on the right
  length: np.ndarray  # int32 [N] real items in hist (>= 1)
  target: np.ndarray  # int32 [N] target item id (1..n_items)
  user: np.ndarray    # int32 [N] 0-based user index

  def __len__(self):
    return len(self.target)


def _make_split(rows, max_len):
  n = len(rows)
  hist = np.zeros((n, max_len), np.int32)
  length = np.zeros(n, np.int32)
  target = np.zeros(n, np.int32)
  user = np.zeros(n, np.int32)
  for r, (u, h, t) in enumerate(rows):
    h = h[-max_len:]
    hist[r, :len(h)] = h
    length[r], target[r], user[r] = len(h), t, u
  return Split(hist, length, target, user)


def check_sequences(sequences, source="", lines=False):
  """Every user needs >= 3 items: one training-history item, a validation and a test target.

  source names the input in the error; lines=True when user u is line u+1 of that file.
  """
  if not sequences:
    raise DataError(f"{source}: dataset has no users.")
  for u, seq in enumerate(sequences):
    if len(seq) < 3:
      where = f" (line {u + 1})" if lines else ""
      raise DataError(f"{source}: user {u}{where} has {len(seq)} items; "
                      "leave-one-out needs at least 3.")


def split_sequences(sequences, max_history_len: int) -> tuple[Split, Split, Split]:
  """(train, valid, test).

  train: for every user and 0-based t with 2 <= t <= min(len-3, 50): history = the
  `max_history_len` most recent items before t, target = item t.
  valid: history seq[:-2], target seq[-2]. test: history seq[:-1], target seq[-1].
  """
  train_rows, valid_rows, test_rows = [], [], []
  for u, seq in enumerate(sequences):
    n = len(seq)
    for t in range(2, min(n - 3, MAX_TARGET_POS) + 1):
      train_rows.append((u, seq[:t], seq[t]))
    valid_rows.append((u, seq[:-2], seq[-2]))
    test_rows.append((u, seq[:-1], seq[-1]))
  return tuple(_make_split(r, max_history_len) for r in (train_rows, valid_rows, test_rows))


def training_items(sequences, n_items: int) -> np.ndarray:
  """bool [n_items+1]: items at positions 0..min(len-3, 50) of some user (seen by training)."""
  seen = np.zeros(n_items + 1, bool)
  for seq in sequences:
    seen[seq[:min(len(seq) - 3, MAX_TARGET_POS) + 1]] = True
  return seen


def sequence_split(sequences, max_history_len: int) -> Split:
  """SASRec's training rows: one per user with at least two training items, `hist` the
  user's sequence without the validation and test targets (its last max_history_len + 1
  items, left-aligned, width max_history_len + 1), `target` its last item. The model reads
  hist[:, :-1] and predicts hist[:, 1:] at every position (docs/data.md, Training rows)."""
  rows = [(u, seq[:-2], seq[-3]) for u, seq in enumerate(sequences) if len(seq) >= 4]
  return _make_split(rows, max_history_len + 1)
