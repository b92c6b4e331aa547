"""Protocol (leave-one-out, sliding rows), item text, and the Sports counts from ../shared/data."""

import os

import numpy as np
import pytest

from support.data import SHARED
from diffgrm_jax.data import protocol
from diffgrm_jax.data import sources
from diffgrm_jax.data.errors import DataError
from diffgrm_jax.data.text import item_text



def _rows(split):
  return [(int(u), list(h[:n]), int(t))
          for u, h, n, t in zip(split.user, split.hist, split.length, split.target)]


def test_leave_one_out_and_sliding_rows_by_hand():
  long = list(range(10, 70))  # 60 items: targets stop at position 50, history capped at 4
  seqs = [np.array(s, np.int32) for s in ([1, 2, 3, 4, 5, 6], [7, 8, 9], long)]
  train, valid, test = protocol.split_sequences(seqs, max_history_len=4)
  expected_train = [(0, [1, 2], 3), (0, [1, 2, 3], 4)]
  expected_train += [(2, long[max(0, t - 4):t], long[t]) for t in range(2, 51)]
  assert _rows(train) == expected_train
  assert _rows(valid) == [(0, [1, 2, 3, 4], 5), (1, [7], 8),
                          (2, long[54:58], long[58])]
  assert _rows(test) == [(0, [2, 3, 4, 5], 6), (1, [7, 8], 9), (2, long[55:59], long[59])]
  # Padding is on the right, with zeros.
  assert train.hist[0].tolist() == [1, 2, 0, 0]
  assert train.hist.dtype == np.int32 and train.hist.shape == (51, 4)
  seen = protocol.training_items(seqs, 69)
  # User 0: positions 0..3; user 1: position 0; user 2: positions 0..50.
  assert np.flatnonzero(seen).tolist() == [1, 2, 3, 4, 7] + long[:51]


def test_too_short_user_is_an_error():
  with pytest.raises(DataError, match="user 1 .line 2. has 2 items"):
    protocol.check_sequences([np.arange(1, 6), np.array([1, 2])], "x.txt", lines=True)


def test_item_text_cleaning():
  meta = {"title": "Caf\u00e9 <b>Mug</b> &amp; Lid", "price": 9.5, "brand": "Acme",
          "categories": [["Home", "Kitchen"], ["Home", "Mugs"]],
          "description": "<p>Holds&nbsp;1 L</p>"}
  assert item_text(meta) == ("Title: Caf Mug & Lid. Price: 9.5. Brand: Acme. "
                             "Category: Home, Kitchen, Mugs. Description: Holds 1 L")
  assert item_text({"title": "X"}) == "Title: X."


def test_sports_counts_from_shared_data():
  folder = os.path.join(SHARED, "Sports_and_Outdoors")
  raw = sources.load_shared(folder, "Sports_and_Outdoors")
  train, valid, test = protocol.split_sequences(raw.sequences, 50)
  assert len(raw.sequences) == 35598
  assert raw.n_items == 18357
  assert sum(len(s) for s in raw.sequences) == 296337
  assert len(train) == 152346
  assert len(valid) == len(test) == 35598
  assert int(protocol.training_items(raw.sequences, raw.n_items).sum()) == 18278
  assert raw.embedding_files[0].endswith("item_emb_minilm.npy")
  assert raw.item_meta[0]["title"].startswith("ghost armorers tool")
