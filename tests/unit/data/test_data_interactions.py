"""The `interactions` source: k-core row by row, ordering, item text, every bad input, the
cache, and the Beauty data written as a CSV giving exactly what `source=shared` gives."""

import csv
import json
import os

import numpy as np
import pytest

from support.data import base_config, config_for
from diffgrm_jax.data import interactions
from diffgrm_jax.data import prepare_data
from diffgrm_jax.data import protocol
from diffgrm_jax.data import sources
from diffgrm_jax.data.errors import DataError
from diffgrm_jax.data.text import item_text


def _write(path, header, rows, sep=","):
  with open(path, "w", newline="") as f:
    w = csv.writer(f, delimiter=sep)
    if header:
      w.writerow(header)
    w.writerows(rows)
  return str(path)


def _config(tmp_path, path, items_path="", kcore=3, name="own"):
  c = config_for(tmp_path, source="interactions", name=name)
  c.data.interactions.path = str(path)
  c.data.interactions.items_path = str(items_path)
  c.data.interactions.kcore = kcore
  return c


# A 3-core example, in file order (user, item, time). Expected, by hand:
#  pass 1, users: u4 has 2 (< 3): removed with its 2 rows.
#  pass 1, items: i4 is left with 1 row (u3), i5 with 1 (u5): both removed, 2 rows.
#  pass 2, users: u3 is now down to 2 (i1, i2): removed, 2 rows. Items: all at 3.
#  pass 3: nothing changes.
# Kept: u1, u2, u5 with i1, i2, i3 each; u5 keeps 3 of its 4 rows.
KCORE_ROWS = [
    ("u1", "i1", "5"), ("u2", "i3", "1"), ("u3", "i1", "1"), ("u4", "i4", "1"),
    ("u1", "i2", "5"),                       # tie with u1's i1: file order (i1 first)
    ("u5", "i5", "2020-01-02"), ("u5", "i3", "2020-01-01T00:00:00Z"),
    ("u1", "i3", "2"),                       # earlier than i1 and i2: first in u1's order
    ("u2", "i2", "3"), ("u2", "i1", "2"), ("u3", "i2", "2"), ("u3", "i4", "3"),
    ("u4", "i5", "2"), ("u5", "i1", "2020-01-03"), ("u5", "i2", "2020-01-01 12:00"),
]


def test_kcore_row_by_row(tmp_path):
  path = _write(tmp_path / "x.csv", ["user_id", "item_id", "timestamp"], KCORE_ROWS)
  raw = sources.load(_config(tmp_path, path))
  assert raw.user_ids == ["u1", "u2", "u5"]  # first appearance in the file
  # u1: i3(2), i1(5), i2(5, tie: file order). u2: i3(1), i1(2), i2(3).
  # u5: i3(Jan 1 00:00), i2(Jan 1 12:00), [i5 (Jan 2) removed], i1(Jan 3).
  assert raw.item_ids == ["i3", "i1", "i2"]  # numbered by first appearance in that order
  assert [s.tolist() for s in raw.sequences] == [[1, 2, 3], [1, 2, 3], [1, 3, 2]]
  assert raw.n_items == 3
  assert raw.skipped == {
      "users with < 3 interactions (k-core, 3 passes)": 2,
      "items with < 3 interactions (k-core)": 2,
      "interactions of users removed by the k-core": 4,
      "interactions of items removed by the k-core": 2,
  }
  # Nothing lost uncounted: kept + removed = rows read.
  assert sum(map(len, raw.sequences)) + 4 + 2 == len(KCORE_ROWS)


def test_kcore_function_matches_brute_force():
  rng = np.random.default_rng(0)
  users, items = rng.integers(0, 60, 300), rng.integers(0, 50, 300)
  keep, counts = interactions.kcore(users, items, 4)
  # Brute force: the largest subset in which every user and item has >= 4 rows.
  ref = np.ones(300, bool)
  while True:
    bad = np.zeros(300, bool)
    for codes in (users, items):
      per = np.bincount(codes[ref], minlength=codes.max() + 1)
      bad |= ref & (per[codes] < 4)
    if not bad.any():
      break
    ref &= ~bad
  assert (keep == ref).all() and 0 < keep.sum() < 300 and counts["passes"] > 2
  assert counts["user_interactions"] + counts["item_interactions"] == 300 - keep.sum()
  assert counts["users"] == len(set(users)) - len(set(users[keep]))
  assert counts["items"] == len(set(items)) - len(set(items[keep]))


def test_kcore_off_keeps_everything(tmp_path):
  path = _write(tmp_path / "x.tsv", ["user", "item", "t"],
                [("a", "x", 1), ("a", "y", 2), ("a", "x", 3), ("b", "z", 1), ("b", "x", 0),
                 ("b", "y", 2)], sep="\t")
  c = _config(tmp_path, path, kcore=0)
  i = c.data.interactions
  i.user_col, i.item_col, i.time_col = "user", "item", "t"
  raw = sources.load(c)
  # Repeats are kept; b's rows are reordered by time.
  assert [s.tolist() for s in raw.sequences] == [[1, 2, 1], [1, 3, 2]]
  assert raw.item_ids == ["x", "y", "z"] and raw.skipped == {}


def test_gzip_and_spreadsheet_bom(tmp_path):
  import gzip  # pylint: disable=g-import-not-at-top
  path = tmp_path / "x.csv.gz"
  with gzip.open(path, "wt", encoding="utf-8-sig") as f:
    f.write(HEADER + "u,a,2\nu,b,1\nu,c,3\n")
  raw = sources.load(_config(tmp_path, path, kcore=1))
  assert raw.item_ids == ["b", "a", "c"] and raw.user_ids == ["u"]


def test_item_table_feeds_the_text(tmp_path):
  path = _write(tmp_path / "x.csv", ["user_id", "item_id", "timestamp"], KCORE_ROWS)
  items = tmp_path / "items.jsonl"
  items.write_text("\n".join(json.dumps(r) for r in [
      {"item_id": "i1", "title": "One", "brand": "Acme", "categories": ["A", "B"]},
      {"item_id": "i4", "title": "removed by the k-core"},
      {"item_id": "i2", "title": "Two <b>bold</b>", "description": "nice", "price": 3},
  ]) + "\n\n")
  raw = sources.load(_config(tmp_path, path, items))
  texts = [item_text(m) for m in raw.item_meta]  # items i3, i1, i2
  assert texts == ["Title: i3.", "Title: One. Brand: Acme. Category: A, B.",
                   "Title: Two bold. Description: nice"]  # price is not in text_cols
  assert raw.skipped["item-table rows of items not kept"] == 1
  assert raw.skipped["items without an item-table row (text = id)"] == 1
  assert raw.skipped[f"blank lines in {items}"] == 1
  # CSV item table: categories split on '|'.
  items_csv = _write(tmp_path / "items.csv", ["item_id", "title", "categories"],
                     [("i3", "Three", "X|Y")])
  raw = sources.load(_config(tmp_path, path, items_csv))
  assert item_text(raw.item_meta[0]) == "Title: Three. Category: X, Y."


def test_prepare_caches_and_keeps_id_maps(tmp_path):
  rows = [(f"user{u}", f"item{(u * 7 + k * 3) % 40}", k) for u in range(60) for k in range(8)]
  path = _write(tmp_path / "x.csv", ["user_id", "item_id", "timestamp"], rows)
  emb = tmp_path / "emb.npy"
  c = _config(tmp_path, path, kcore=5)
  raw = sources.load(c)
  np.save(emb, np.random.default_rng(0).normal(size=(raw.n_items, 8)).astype(np.float32))
  c.embedding.source, c.embedding.path = "file", str(emb)
  data = prepare_data(c, verbose=False)
  assert data.ids == {"users": raw.user_ids, "items": raw.item_ids}
  assert data.stats["users"] == 60 and data.stats["items"] == raw.n_items
  again = prepare_data(c, verbose=False)  # from the cache
  assert again.ids == data.ids and again.stats == data.stats
  # A different k is a different dataset (part of the cache key).
  c.data.interactions.kcore = 9
  with pytest.raises(DataError, match="no interactions left after the 9-core filter"):
    prepare_data(c, verbose=False)


# ---------------------------------------------------------------- bad input
HEADER = "user_id,item_id,timestamp\n"


@pytest.mark.parametrize("name, text, error", [
    ("empty.csv", "", r"empty.csv: empty file \(expected a header row"),
    ("blank.csv", "\n\n", r"blank.csv: empty file"),
    ("head.csv", HEADER, r"head.csv: no rows after the header"),
    ("col.csv", "user_id,item,timestamp\nu,i,1\n", r"col.csv:1: no column 'item_id' in the header"),
    ("miss.csv", HEADER + "u,i,1\nu,,2\n", r"miss.csv:3: missing 'item_id'"),
    ("time.csv", HEADER + "u,i,1\nu,j,yesterday\n",
     r"time.csv:3: unparsable timestamp 'yesterday' in column 'timestamp'"),
    ("nan.csv", HEADER + "u,i,nan\n", r"nan.csv:2: timestamp 'nan' .* not finite"),
    ("dup.csv", HEADER + "u,i,1\n" + HEADER + "v,i,2\n",
     r"dup.csv:3: duplicate header row \(were files concatenated\?\)"),
    ("fields.csv", HEADER + "u,i,1\nu,i\n", r"fields.csv:3: 2 fields, the header has 3"),
    ("empty.jsonl", "", r"empty.jsonl: empty file \(no JSON lines\)"),
    ("miss.jsonl", '{"user_id": "u", "item_id": "i", "timestamp": 1}\n{"user_id": "u", '
     '"timestamp": 2}\n', r"miss.jsonl:2: missing 'item_id'"),
    ("bad.jsonl", '{"user_id": "u", "item_id": "i", "timestamp": 1}\n{"user_id": \n',
     r"bad.jsonl:2: malformed JSON line"),
    ("list.jsonl", "[1, 2, 3]\n", r"list.jsonl:1: expected a JSON object"),
    ("time.jsonl", '{"user_id": "u", "item_id": "i", "timestamp": "32/13/2020"}\n',
     r"time.jsonl:1: unparsable timestamp '32/13/2020'"),
    ("x.parquet", "", r"x.parquet: Parquet is not supported"),
    ("x.xlsx", "", r"x.xlsx: cannot tell the format from the extension '.xlsx'"),
])
def test_bad_input(tmp_path, name, text, error):
  (tmp_path / name).write_text(text)
  with pytest.raises(DataError, match=error):
    sources.load(_config(tmp_path, tmp_path / name))


def test_bad_item_table_and_settings(tmp_path):
  path = _write(tmp_path / "x.csv", ["user_id", "item_id", "timestamp"], KCORE_ROWS)
  items = _write(tmp_path / "items.csv", ["item_id", "title"],
                 [("i1", "a"), ("i2", "b"), ("i1", "c")])
  with pytest.raises(DataError, match=r"items.csv:4: duplicate item id 'i1' \(first at line 2\)"):
    sources.load(_config(tmp_path, path, items))
  c = _config(tmp_path, path, items)
  c.data.interactions.text_cols = ("title", "colour")
  with pytest.raises(DataError, match=r"text_cols: \['colour'\] not among"):
    sources.load(c)
  c = _config(tmp_path, tmp_path / "missing.csv")
  with pytest.raises(DataError, match=r"missing.csv: file not found"):
    sources.load(c)
  c = _config(tmp_path, "")
  with pytest.raises(DataError, match=r"needs data.interactions.path"):
    sources.load(c)


# ---------------------------------------------------------------- parity with source=shared
def test_beauty_csv_equals_shared(tmp_path):
  """Beauty written as an interactions CSV (rows interleaved across users, timestamps with
  ties resolved by file order) gives the same users, items, sequences, splits and item text
  as the shared files, and its id maps name the original users and items."""
  shared = base_config(tmp_path / "cache")  # data_dir: ../shared/data or $DIFFGRM_DATA
  shared.data.source, shared.data.name = "shared", "Beauty"
  ref = sources.load(shared)
  folder = os.path.join(shared.data.data_dir, "Beauty")
  with open(os.path.join(folder, "datamaps.json")) as f:
    maps = json.load(f)
  users = [maps["id2user"][str(u + 1)] for u in range(len(ref.sequences))]
  asins = [maps["id2item"][str(i)] for i in range(1, ref.n_items + 1)]
  # Row order: every user's 1st item, then every user's 2nd, ... (users first appear in
  # their original order); timestamp = position // 2, so pairs tie and file order decides.
  longest = max(map(len, ref.sequences))
  rows = [(users[u], asins[s[p] - 1], p // 2) for p in range(longest)
          for u, s in enumerate(ref.sequences) if p < len(s)]
  path = _write(tmp_path / "beauty.csv", ["user_id", "item_id", "timestamp"], rows)
  items = _write(tmp_path / "items.csv", ["item_id", "title", "brand", "categories"],
                 [(asins[i], m["title"], m["brand"] or "", "|".join(m["categories"][0]))
                  for i, m in enumerate(ref.item_meta)])
  c = _config(tmp_path, path, items, kcore=5, name="Beauty")
  raw = sources.load(c)

  assert raw.n_items == ref.n_items == 12101 and len(raw.sequences) == 22363
  assert all(np.array_equal(a, b) for a, b in zip(raw.sequences, ref.sequences, strict=True))
  assert sum(map(len, raw.sequences)) == 198502
  assert set(raw.skipped.values()) == {0}  # 5-core data: the filter removes nothing
  assert raw.user_ids == users and raw.item_ids == asins
  assert [item_text(m) for m in raw.item_meta] == [item_text(m) for m in ref.item_meta]
  for a, b in zip(protocol.split_sequences(raw.sequences, 50),
                  protocol.split_sequences(ref.sequences, 50)):
    for field in ("hist", "length", "target", "user"):
      assert np.array_equal(getattr(a, field), getattr(b, field))
  assert np.array_equal(protocol.training_items(raw.sequences, raw.n_items),
                        protocol.training_items(ref.sequences, ref.n_items))
