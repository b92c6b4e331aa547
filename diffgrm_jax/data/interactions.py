"""The `interactions` source: your own table of (user, item, timestamp) rows.

Formats (by file extension, or `data.interactions.format`):
  csv / tsv ... a header row naming the columns, then one interaction per row
  jsonl ....... one JSON object per line (`.jsonl`, `.json`, `.ndjson`)
Column names come from `data.interactions.{user,item,time}_col`. A timestamp is a number
(any unit: only the order matters) or an ISO 8601 date/time (naive times read as UTC).

An optional item table (`data.interactions.items_path`, same formats) gives each item's
text (`text_cols`: title, price, brand, categories, description) for the item-text
embedding (`embedding.source=sentence_transformers`). In CSV/TSV several categories share
one field separated by `category_sep`; in JSON lines `categories` may be a list.

Steps, in order:
  1. read every row; a bad row (missing field, unparsable timestamp, wrong field count,
     a repeated header, an empty file) stops with an error naming the file and line;
  2. iterative k-core (`kcore`, default 5): drop users with fewer than k interactions,
     then items with fewer than k, and repeat until nothing changes (the result does not
     depend on the order; the counts say which filter removed what);
  3. per user, interactions sorted by timestamp; ties keep file order (a stable sort);
  4. users are numbered 0.. in order of first appearance in the file, items 1.. in order
     of first appearance in the users' sorted sequences (0 = padding), as the other sources.
Repeated (user, item) pairs are kept as separate interactions. Every removed user, item,
interaction and unused item-table row is counted in `RawDataset.skipped`, which
`prepare` prints; the raw ids of users and items are kept (`user_ids`, `item_ids`).
"""

import csv
import datetime
import json
import os

import numpy as np

from diffgrm_jax.data.errors import DataError

# Item-text fields understood by `text.item_text`.
TEXT_FIELDS = ("title", "price", "brand", "categories", "description")
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
            ".ndjson": "jsonl"}


def file_format(path: str, fmt: str = "auto") -> str:
  """'csv' | 'tsv' | 'jsonl' from `fmt` or, when 'auto', from the extension (.gz ignored)."""
  if fmt != "auto":
    if fmt not in ("csv", "tsv", "jsonl"):
      raise DataError(f"data.interactions.format={fmt!r}: use 'auto', 'csv', 'tsv' or 'jsonl'.")
    return fmt
  base = path[:-3] if path.endswith(".gz") else path
  ext = os.path.splitext(base)[1].lower()
  if ext == ".parquet":
    raise DataError(f"{path}: Parquet is not supported (no Parquet reader is a dependency); "
                    "convert it to CSV or JSON lines, e.g. pandas.read_parquet(p).to_csv(...).")
  if ext not in _FORMATS:
    raise DataError(f"{path}: cannot tell the format from the extension {ext!r}; use .csv, "
                    ".tsv or .jsonl, or set data.interactions.format.")
  return _FORMATS[ext]


def _open(path):
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found.")
  if path.endswith(".gz"):
    import gzip  # pylint: disable=g-import-not-at-top
    return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
  return open(path, encoding="utf-8-sig", newline="")  # -sig: a spreadsheet's BOM is dropped


def read_records(path: str, fmt: str, columns, *, required=()):
  """Yields (line number, {column: value}) for each row of a CSV/TSV/JSON-lines file.

  `columns` are the columns wanted; those in `required` must be in the header (CSV/TSV)
  and non-empty in every row. Blank lines are skipped (yielded as (line, None) so the
  caller can count them). Raises DataError naming the file and line.
  """
  fmt = file_format(path, fmt)
  with _open(path) as f:
    if fmt == "jsonl":
      n = 0
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          yield lineno, None
          continue
        n += 1
        try:
          rec = json.loads(line)
        except json.JSONDecodeError as e:
          raise DataError(f"{path}:{lineno}: malformed JSON line ({e.msg}): "
                          f"{line.strip()[:80]!r}") from None
        if not isinstance(rec, dict):
          raise DataError(f"{path}:{lineno}: expected a JSON object, got {line.strip()[:80]!r}")
        yield lineno, _check_row(path, lineno, {c: rec.get(c) for c in columns}, required)
      if not n:
        raise DataError(f"{path}: empty file (no JSON lines).")
      return
    reader = csv.reader(f, delimiter="\t" if fmt == "tsv" else ",")
    header = next(reader, None)
    while header is not None and not header:  # blank lines before the header
      header = next(reader, None)
    if header is None:
      raise DataError(f"{path}: empty file (expected a header row naming the columns).")
    header = [h.strip() for h in header]
    head_line = reader.line_num
    for c in required:
      if c not in header:
        raise DataError(f"{path}:{head_line}: no column {c!r} in the header {header} "
                        "(set the data.interactions.*_col fields to your column names).")
    index = {c: header.index(c) for c in columns if c in header}
    n = 0
    for row in reader:
      lineno = reader.line_num
      if not row or not any(x.strip() for x in row):
        yield lineno, None
        continue
      if [x.strip() for x in row] == header:
        raise DataError(f"{path}:{lineno}: duplicate header row (were files concatenated?).")
      if len(row) != len(header):
        raise DataError(f"{path}:{lineno}: {len(row)} fields, the header has {len(header)}.")
      n += 1
      yield lineno, _check_row(path, lineno, {c: row[i] for c, i in index.items()}, required)
    if not n:
      raise DataError(f"{path}: no rows after the header.")


def _check_row(path, lineno, rec, required):
  for c in required:
    v = rec.get(c)
    if v is None or (isinstance(v, str) and not v.strip()):
      raise DataError(f"{path}:{lineno}: missing {c!r}.")
  return rec


def parse_time(value, path, lineno, col) -> float:
  """A number, or an ISO 8601 date/time (naive = UTC), as float seconds."""
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    t = float(value)
  else:
    text = str(value).strip()
    try:
      t = float(text)
    except ValueError:
      try:
        dt = datetime.datetime.fromisoformat(text)
      except ValueError:
        raise DataError(f"{path}:{lineno}: unparsable timestamp {text[:40]!r} in column "
                        f"{col!r} (expected a number or an ISO 8601 date/time).") from None
      if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
      t = dt.timestamp()
  if not np.isfinite(t):
    raise DataError(f"{path}:{lineno}: timestamp {value!r} in column {col!r} is not finite.")
  return t


def kcore(users: np.ndarray, items: np.ndarray, k: int):
  """Iterative k-core of an interaction list (users, items: int arrays of codes).

  Returns (keep: bool mask over the interactions, counts: dict of what each filter
  removed: 'users', 'items', 'user_interactions', 'item_interactions', 'passes').
  Each pass drops users with fewer than k kept interactions, then items with fewer than
  k; passes repeat until one removes nothing.
  """
  keep = np.ones(len(users), bool)
  counts = {"users": 0, "items": 0, "user_interactions": 0, "item_interactions": 0,
            "passes": 0}
  if k <= 1:
    return keep, counts
  # alive: users/items not removed yet (one whose interactions all went with the other
  # filter's removals is removed, and counted, by its own filter's next step).
  alive = {"users": np.bincount(users) > 0, "items": np.bincount(items) > 0}
  while True:
    counts["passes"] += 1
    changed = False
    for codes, what in ((users, "users"), (items, "items")):
      per = np.bincount(codes[keep], minlength=len(alive[what]))
      low = alive[what] & (per < k)
      if low.any():
        alive[what] &= ~low
        drop = keep & low[codes]
        counts[what] += int(low.sum())
        counts[what[:-1] + "_interactions"] += int(drop.sum())
        keep &= ~drop
        changed = True
    if not changed:
      return keep, counts


def _resolve(path: str) -> str:
  return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def input_paths(cfg) -> list[str]:
  """The interactions file and, when set, the item table."""
  if not cfg.path:
    raise DataError("data.source='interactions' needs data.interactions.path (your "
                    "user/item/timestamp file: .csv, .tsv or .jsonl).")
  return [_resolve(cfg.path)] + ([_resolve(cfg.items_path)] if cfg.items_path else [])


def read_interactions(path: str, cfg):
  """(user codes, item codes, times, raw user ids, raw item ids, blank lines) in file order."""
  ucol, icol, tcol = cfg.user_col, cfg.item_col, cfg.time_col
  user_code, item_code = {}, {}
  users, items, times, blank = [], [], [], 0
  for lineno, rec in read_records(path, cfg.format, (ucol, icol, tcol),
                                  required=(ucol, icol, tcol)):
    if rec is None:
      blank += 1
      continue
    users.append(user_code.setdefault(str(rec[ucol]).strip(), len(user_code)))
    items.append(item_code.setdefault(str(rec[icol]).strip(), len(item_code)))
    times.append(parse_time(rec[tcol], path, lineno, tcol))
  return (np.asarray(users, np.int64), np.asarray(items, np.int64),
          np.asarray(times, np.float64), list(user_code), list(item_code), blank)


def read_item_table(path: str, cfg, wanted) -> tuple[dict, int, int]:
  """Item table -> ({raw item id: meta dict}, rows of unwanted items, blank lines)."""
  bad = [c for c in cfg.text_cols if c not in TEXT_FIELDS]
  if bad:
    raise DataError(f"data.interactions.text_cols: {bad} not among the item-text fields "
                    f"{TEXT_FIELDS}; rename those columns in the item table.")
  fmt = file_format(path, cfg.format)
  idcol = cfg.item_id_col
  meta, first_line, unwanted, blank = {}, {}, 0, 0
  for lineno, rec in read_records(path, cfg.format, (idcol, *cfg.text_cols), required=(idcol,)):
    if rec is None:
      blank += 1
      continue
    item = str(rec[idcol]).strip()
    if item in first_line:
      raise DataError(f"{path}:{lineno}: duplicate item id {item!r} (first at line "
                      f"{first_line[item]}).")
    first_line[item] = lineno
    if item not in wanted:
      unwanted += 1
      continue
    m = {c: rec[c] for c in cfg.text_cols if rec.get(c) not in (None, "")}
    cats = m.pop("categories", None)
    if isinstance(cats, str) and fmt != "jsonl":
      cats = [c.strip() for c in cats.split(cfg.category_sep)] if cfg.category_sep else [cats]
    m["categories"] = [cats if isinstance(cats, list) else [cats]] if cats else []
    meta[item] = m
  return meta, unwanted, blank


def load_interactions(config):
  """config.data (source='interactions') -> RawDataset."""
  from diffgrm_jax.data.sources import RawDataset  # pylint: disable=g-import-not-at-top
  cfg = config.data.interactions
  paths = input_paths(cfg)
  path = paths[0]
  users, items, times, user_ids, item_ids, blank = read_interactions(path, cfg)
  keep, removed = kcore(users, items, int(cfg.kcore))
  if not keep.any():
    raise DataError(f"{path}: no interactions left after the {cfg.kcore}-core filter "
                    f"({len(user_ids):,} users, {len(item_ids):,} items, {len(users):,} "
                    "interactions before it); lower data.interactions.kcore.")
  rows = np.flatnonzero(keep)
  # Group by user (codes follow first appearance in the file), then by time; ties keep
  # file order (the row index is the last key).
  order = rows[np.lexsort((rows, times[rows], users[rows]))]
  u, it = users[order], items[order]
  _, first = np.unique(it, return_index=True)  # first position of each item code
  codes_in_order = it[np.sort(first)]
  new_id = np.zeros(len(item_ids), np.int64)
  new_id[codes_in_order] = np.arange(1, len(codes_in_order) + 1)
  flat = new_id[it].astype(np.int32)
  bounds = np.flatnonzero(np.diff(u)) + 1
  sequences = np.split(flat, bounds)
  kept_users = u[np.concatenate([[0], bounds])]
  skipped = {} if cfg.kcore <= 1 else {
      f"users with < {cfg.kcore} interactions (k-core, {removed['passes']} passes)":
          removed["users"],
      f"items with < {cfg.kcore} interactions (k-core)": removed["items"],
      "interactions of users removed by the k-core": removed["user_interactions"],
      "interactions of items removed by the k-core": removed["item_interactions"],
  }
  raw_items = [item_ids[c] for c in codes_in_order]
  item_meta = None
  if len(paths) > 1:
    table, unwanted, blank_items = read_item_table(paths[1], cfg, set(raw_items))
    item_meta = [table.get(r, {"title": r}) for r in raw_items]
    skipped["item-table rows of items not kept"] = unwanted
    skipped["items without an item-table row (text = id)"] = sum(r not in table
                                                                 for r in raw_items)
    if blank_items:
      skipped[f"blank lines in {paths[1]}"] = blank_items
  if blank:
    skipped[f"blank lines in {path}"] = blank
  return RawDataset(name=config.data.name, sequences=sequences, n_items=len(raw_items),
                    item_meta=item_meta, skipped=skipped, origin=path,
                    user_ids=[user_ids[c] for c in kept_users], item_ids=raw_items)
