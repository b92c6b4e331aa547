"""Dataset sources: raw files (or a generator) -> per-user chronological item sequences.

Every source returns a `RawDataset` whose item ids are 1..n_items (0 = padding) and whose
users are listed in a fixed order (user index = position in `sequences`).

* `synthetic`: generated from a seed, no files (the embedded default, used by CI).
* `shared`: the preprocessed format of ../shared/data (`<name>/<name>.txt` with one
  `user item item ...` line per user in chronological order, `derived/item_text.jsonl`).
* `amazon2014`: the raw SNAP files `reviews_<name>_5.json.gz` (JSON lines) and
  `meta_<name>.json.gz` (Python-literal dict lines), read locally or downloaded.
* `interactions`: your own (user, item, timestamp) table in CSV, TSV or JSON lines, plus an
  optional item-text table, k-core filtered (see `interactions.py`).
"""

import ast
import dataclasses
import gzip
import json
import logging
import os
import urllib.error
import urllib.request
import zlib

import numpy as np

from diffgrm_jax.data import interactions
from diffgrm_jax.data.errors import DataError

# The 2014 5-core categories published on the SNAP productGraph page.
AMAZON2014_CATEGORIES = (
    "Books", "Electronics", "Movies_and_TV", "CDs_and_Vinyl", "Clothing_Shoes_and_Jewelry",
    "Home_and_Kitchen", "Kindle_Store", "Sports_and_Outdoors", "Cell_Phones_and_Accessories",
    "Health_and_Personal_Care", "Toys_and_Games", "Video_Games", "Tools_and_Home_Improvement",
    "Beauty", "Apps_for_Android", "Office_Products", "Pet_Supplies", "Automotive",
    "Grocery_and_Gourmet_Food", "Patio_Lawn_and_Garden", "Baby", "Digital_Music",
    "Musical_Instruments", "Amazon_Instant_Video")


@dataclasses.dataclass
class RawDataset:
  """Per-user chronological sequences plus optional item metadata and vectors."""
  name: str
  sequences: list  # list of int32 arrays, item ids 1..n_items, oldest first
  n_items: int
  item_meta: list | None = None  # item_meta[i-1]: dict of text fields of item i
  embeddings: np.ndarray | None = None  # float32 [n_items, dim] when the source has its own
  embedding_files: tuple = ()  # precomputed .npy files found beside the data ('auto')
  skipped: dict = dataclasses.field(default_factory=dict)  # what was skipped on purpose
  origin: str = ""  # the file users were read from (one user per line when lines=True)
  lines: bool = False
  user_ids: list | None = None  # raw id of user index u (interactions source)
  item_ids: list | None = None  # raw id of item i at [i-1] (interactions source)


def load(config) -> RawDataset:
  """Loads the dataset named by config.data."""
  source = config.data.source
  if source == "synthetic":
    return load_synthetic(config.data.synthetic, name=config.data.name)
  if source == "shared":
    return load_shared(os.path.normpath(os.path.join(config.data.data_dir, config.data.name)),
                       config.data.name)
  if source == "amazon2014":
    return load_amazon2014(config)
  if source == "interactions":
    return interactions.load_interactions(config)
  raise DataError(f"config.data.source={source!r} is unknown: use 'synthetic', 'shared', "
                  "'amazon2014' or 'interactions'.")


def input_files(config) -> list[str]:
  """The files a source reads (for the cache fingerprint); [] for synthetic."""
  d = config.data
  if d.source == "shared":
    folder = os.path.normpath(os.path.join(d.data_dir, d.name))
    return [os.path.join(folder, f"{d.name}.txt"),
            os.path.join(folder, "derived", "item_text.jsonl")]
  if d.source == "amazon2014":
    return list(_amazon_paths(config, need=False))
  if d.source == "interactions":
    return interactions.input_paths(d.interactions)
  return []


# ---------------------------------------------------------------- synthetic
def load_synthetic(s, name="synthetic") -> RawDataset:
  """A learnable catalogue: items in latent groups, users walking a Markov chain.

  Items are split over `n_groups` groups; an item's vector is its group centroid plus
  small noise (dim `emb_dim`). Each group has one strong successor group, and each item
  a designated successor item in that group. The next item of a user is the current
  item's successor with probability 0.5; otherwise the next group is the successor group
  (p=0.75) or a uniform one, and the item is drawn from that group by a Zipf-like
  preference. A sequence model can thus predict far better than popularity.
  """
  rng = np.random.default_rng(s.seed)
  n_items, n_groups, n_users = int(s.n_items), int(s.n_groups), int(s.n_users)
  if n_items < n_groups or n_groups < 2 or s.min_len < 3 or s.max_len < s.min_len:
    raise DataError("config.data.synthetic: need n_items >= n_groups >= 2 and "
                    "3 <= min_len <= max_len.")
  group = rng.permutation(np.arange(n_items) % n_groups)  # group of item i+1
  members = [np.flatnonzero(group == g) for g in range(n_groups)]
  centroids = rng.normal(size=(n_groups, s.emb_dim))
  centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
  emb = centroids[group] + 0.35 * rng.normal(size=(n_items, s.emb_dim)) / np.sqrt(s.emb_dim)
  next_group = rng.permutation(n_groups)
  pref = [1.0 / np.arange(1, len(m) + 1) ** 0.8 for m in members]
  pref = [p / p.sum() for p in pref]
  successor = np.array([rng.choice(members[next_group[group[i]]]) for i in range(n_items)])

  def draw_from(g):
    return members[g][rng.choice(len(members[g]), p=pref[g])]

  lengths = rng.integers(s.min_len, s.max_len + 1, size=n_users)
  sequences = []
  for n in lengths:
    seq = [draw_from(rng.integers(n_groups))]
    while len(seq) < n:
      cur = seq[-1]
      if rng.random() < 0.5:
        nxt = successor[cur]
      else:
        g = next_group[group[cur]] if rng.random() < 0.75 else rng.integers(n_groups)
        nxt = draw_from(g)
      seq.append(nxt)
    sequences.append(np.asarray(seq, np.int32) + 1)
  meta = [{"title": f"synthetic item {i + 1}", "categories": [[f"group {group[i]}"]]}
          for i in range(n_items)]
  return RawDataset(name=name, sequences=sequences, n_items=n_items, item_meta=meta,
                    embeddings=emb.astype(np.float32), origin="synthetic source")


# ---------------------------------------------------------------- shared format
def load_shared(folder: str, name: str) -> RawDataset:
  """Reads `<folder>/<name>.txt` (+ derived/item_text.jsonl and derived/item_emb_*.npy)."""
  seq_path = os.path.join(folder, f"{name}.txt")
  if not os.path.isfile(seq_path):
    raise DataError(f"{seq_path}: sequence file not found (config.data.data_dir / "
                    f"config.data.name point to {folder!r}).")
  text_path = os.path.join(folder, "derived", "item_text.jsonl")
  meta = _read_item_text(text_path) if os.path.isfile(text_path) else None
  n_known = len(meta) if meta is not None else None
  sequences, users = [], []
  with open(seq_path) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        raise DataError(f"{seq_path}:{lineno}: empty line (expected 'user item item ...').")
      fields = line.split()
      try:
        items = np.array([int(x) for x in fields[1:]], np.int64)
      except ValueError:
        raise DataError(f"{seq_path}:{lineno}: malformed line, item ids must be integers: "
                        f"{line.strip()[:80]!r}") from None
      if items.size == 0:
        raise DataError(f"{seq_path}:{lineno}: user {fields[0]} has no items.")
      bad = items[(items < 1) | ((items > n_known) if n_known else False)]
      if bad.size:
        limit = f"1..{n_known} (items in {text_path})" if n_known else ">= 1"
        raise DataError(f"{seq_path}:{lineno}: item id {bad[0]} out of range {limit}.")
      sequences.append(items.astype(np.int32))
      users.append(fields[0])
  if not sequences:
    raise DataError(f"{seq_path}: no users.")
  n_items = n_known or int(max(s.max() for s in sequences))
  derived = os.path.join(folder, "derived")
  emb_files = tuple(sorted(os.path.join(derived, f) for f in os.listdir(derived)
                           if f.startswith("item_emb_") and f.endswith(".npy"))
                    ) if os.path.isdir(derived) else ()
  # Raw ids: the line's user field; an item's asin in item_text.jsonl, else its number.
  item_ids = [str((meta[i].get("asin") if meta and i < len(meta) else None) or i + 1)
              for i in range(n_items)]
  return RawDataset(name=name, sequences=sequences, n_items=n_items, item_meta=meta,
                    embedding_files=emb_files, origin=seq_path, lines=True,
                    user_ids=users, item_ids=item_ids)


def _read_item_text(path: str) -> list[dict]:
  """derived/item_text.jsonl -> metadata dicts in item id order (ids must be 1..n)."""
  out = []
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      try:
        rec = json.loads(line)
        item_id = int(rec["item_id"])
      except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}:{lineno}: malformed line ({e}).") from None
      if item_id != lineno:
        raise DataError(f"{path}:{lineno}: item_id {item_id} out of order (expected {lineno}).")
      meta = {k: rec.get(k) for k in ("title", "price", "brand", "description", "asin")}
      # Sports has no titles: its keyword text (IDGenRec) stands in for the title.
      meta["title"] = meta["title"] or rec.get("idgenrec_textual_id")
      meta["categories"] = [rec.get("categories") or []]
      out.append(meta)
  return out


# ---------------------------------------------------------------- amazon 2014 raw files
# Download locations, tried in order (SNAP first, the McAuley-lab copy as a fallback).
AMAZON2014_URLS = (
    "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/",
    "http://jmcauley.ucsd.edu/data/amazon/categoryFiles/",
)


def _amazon_paths(config, need=True):
  """(reviews, meta) paths: data_dir/<name>/ first, else cache_dir/raw/<name>/ (downloaded)."""
  d = config.data
  names = (f"reviews_{d.name}_5.json.gz", f"meta_{d.name}.json.gz")
  local = [os.path.join(d.data_dir, d.name, n) for n in names]
  if all(os.path.isfile(p) for p in local):
    return tuple(local)
  cached = [os.path.join(d.cache_dir, "raw", d.name, n) for n in names]
  if not need or all(os.path.isfile(p) for p in cached):
    return tuple(cached)
  if d.name not in AMAZON2014_CATEGORIES:
    raise DataError(f"amazon2014: unknown category {d.name!r} and no files {names} in "
                    f"{os.path.dirname(local[0])}. Known: {', '.join(AMAZON2014_CATEGORIES)}.")
  if not d.download:
    raise DataError(f"amazon2014: {local[0]} / {local[1]} not found; put the SNAP files "
                    "there or set --config.data.download=True.")
  for n, dest in zip(names, cached):
    if not os.path.isfile(dest):
      download_any([base + n for base in AMAZON2014_URLS], dest)
  return tuple(cached)


def download_any(urls, dest: str) -> str:
  """Tries each URL in turn; raises the last DataError when all fail."""
  err = None
  for url in urls:
    try:
      return download(url, dest)
    except DataError as e:
      logging.warning("%s", e)
      err = e
  raise err


def download(url: str, dest: str, *, timeout: float = 30.0, chunk: int = 1 << 20) -> str:
  """Downloads url to dest with a progress bar, resuming a partial `dest + '.part'`.

  Raises DataError when the host cannot be reached (offline) or answers other than 200/206.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
  part = dest + ".part"
  have = os.path.getsize(part) if os.path.exists(part) else 0
  request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
  try:
    response = urllib.request.urlopen(request, timeout=timeout)
  except urllib.error.HTTPError as e:
    if e.code == 416 and have:  # the partial file is already complete
      os.replace(part, dest)
      return dest
    raise DataError(f"download {url}: the server answered HTTP {e.code} {e.reason}; "
                    f"fetch the file by hand into {os.path.dirname(dest)}.") from None
  except (urllib.error.URLError, OSError) as e:
    raise DataError(f"download {url}: cannot reach the host ({getattr(e, 'reason', e)}); "
                    f"are you offline? Put the file at {dest} by hand.") from None
  with response:
    status = response.status
    if status == 200:
      have = 0  # the server ignored the range: start over
    elif status != 206:
      raise DataError(f"download {url}: unexpected HTTP {status}.")
    size = response.headers.get("Content-Length")
    total = have + int(size) if size is not None else None
    with open(part, "ab" if have else "wb") as out, tqdm(
        total=total, initial=have, unit="B", unit_scale=True,
        desc=os.path.basename(dest), disable=None) as bar:
      while True:
        try:
          block = response.read(chunk)
        except OSError as e:
          raise DataError(f"download {url}: connection lost ({e}); run again to resume "
                          f"from {part}.") from None
        if not block:
          break
        out.write(block)
        bar.update(len(block))
  if total is not None and os.path.getsize(part) != total:
    raise DataError(f"download {url}: got {os.path.getsize(part)} of {total} bytes; run "
                    f"again to resume from {part}.")
  os.replace(part, dest)
  return dest


def _gzip_lines(path: str):
  """Yields (line number, text) of a gzip file; truncation/corruption -> DataError."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found.")
  lineno = 0
  try:
    with gzip.open(path, "rt", encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        yield lineno, line
  except (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError) as e:
    raise DataError(f"{path}: truncated or corrupt gzip after line {lineno} ({e}); "
                    "delete it and download again.") from None


def read_reviews(path: str):
  """reviews_*_5.json.gz -> list of (reviewerID, asin, unixReviewTime) in file order."""
  out = []
  for lineno, line in _gzip_lines(path):
    if not line.strip():
      continue
    try:
      rec = json.loads(line)
    except json.JSONDecodeError:
      try:
        rec = ast.literal_eval(line)
      except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise DataError(f"{path}:{lineno}: malformed line (neither JSON nor a Python "
                        f"literal): {line.strip()[:80]!r}") from None
    try:
      out.append((str(rec["reviewerID"]), str(rec["asin"]), int(rec["unixReviewTime"])))
    except (KeyError, TypeError, ValueError) as e:
      raise DataError(f"{path}:{lineno}: review lacks a valid field {e}.") from None
  if not out:
    raise DataError(f"{path}: no reviews.")
  return out


def read_meta(path: str, wanted) -> tuple[dict, int]:
  """meta_*.json.gz (Python-literal dict lines, parsed with ast.literal_eval) -> {asin: dict}.

  Only asins in `wanted` are kept; returns (meta, number of lines skipped as unwanted).
  """
  meta, skipped = {}, 0
  for lineno, line in _gzip_lines(path):
    if not line.strip():
      continue
    try:
      rec = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
      raise DataError(f"{path}:{lineno}: malformed line (not a Python-literal dict): "
                      f"{line.strip()[:80]!r}") from None
    if not isinstance(rec, dict) or "asin" not in rec:
      raise DataError(f"{path}:{lineno}: expected a dict with an 'asin' key.")
    if rec["asin"] in wanted:
      meta[rec["asin"]] = rec
    else:
      skipped += 1
  return meta, skipped


def build_sequences(reviews):
  """Groups reviews per user (first-appearance order), sorts by time (stable on ties) and
  numbers items 1.. in order of first appearance. Returns (sequences, asins, users)."""
  by_user = {}
  for user, asin, t in reviews:
    by_user.setdefault(user, []).append((t, asin))
  item_id, sequences = {}, []
  for events in by_user.values():
    events.sort(key=lambda e: e[0])  # list.sort is stable
    sequences.append(np.array([item_id.setdefault(a, len(item_id) + 1) for _, a in events],
                              np.int32))
  return sequences, list(item_id), list(by_user)


def load_amazon2014(config) -> RawDataset:
  """Raw SNAP files -> RawDataset (metadata text for every item that has it)."""
  reviews_path, meta_path = _amazon_paths(config)
  sequences, asins, _ = build_sequences(read_reviews(reviews_path))
  meta, skipped_lines = read_meta(meta_path, set(asins))
  missing = sum(a not in meta for a in asins)
  item_meta = [meta.get(a, {"title": a}) for a in asins]
  return RawDataset(name=config.data.name, sequences=sequences, n_items=len(asins),
                    item_meta=item_meta, origin=reviews_path,
                    skipped={"meta lines of items without reviews": skipped_lines,
                             "items without metadata (text = asin)": missing})
