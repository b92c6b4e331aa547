"""prepare_data: sources -> protocol -> embeddings -> SIDs, cached; the `PreparedData` record.

`save_prepared` / `load_prepared` move prepared data as a folder of plain files (no pickle:
a folder may come from someone else), the format training also writes to WORKDIR/data:

  meta.json               name, sizes, max_history_len, stats, cache key, sid_hash
  sids.npy                int32 [n_items+1, n_digit] SID table (row 0 = padding)
  item_train_counts.npy   int64 [n_items+1] times each item is a training target
  sequences.npz           flat int32 item ids + int64 offsets: user u's chronological items
  items.json              {"ids": raw id of item i at [i-1], "text": its title or text}
  users.json              {"ids": raw id of user u at [u]}

Loading rebuilds the splits from the sequences with the protocol functions.
"""

import dataclasses
import io
import logging
import os

import numpy as np

from diffgrm_jax.data import cache
from diffgrm_jax.data import embeddings
from diffgrm_jax.data import protocol
from diffgrm_jax.data import sids as sids_lib
from diffgrm_jax.data import sources
from diffgrm_jax.data import text as text_lib
from diffgrm_jax.data.errors import DataError
from diffgrm_jax.data.protocol import Split
from diffgrm_jax.runtime import paths


@dataclasses.dataclass
class PreparedData:
  """Everything the model, training and evaluation need from the data layer."""
  name: str
  n_users: int
  n_items: int                   # item ids are 1..n_items; 0 is padding
  n_digit: int
  codebook_size: int
  sids: np.ndarray               # int32 [n_items+1, n_digit]; row 0 = padding (zeros)
  train: Split
  valid: Split                   # one row per user: history seq[:-2], target seq[-2]
  test: Split                    # one row per user: history seq[:-1], target seq[-1]
  item_train_counts: np.ndarray  # int64 [n_items+1]: times each item is a training target
  stats: dict                    # data + SID statistics (JSON-serialisable)
  cache_key: str
  # {'users': raw id of user index u, 'items': raw id of item i at [i-1]} (strings; the
  # numbers themselves where the source has no raw ids).
  ids: dict | None = None
  sequences: list | None = None  # user u's chronological item ids (int32 arrays)
  item_text: list | None = None  # display text of item i at [i-1]: title, else its text


def sid_hash(sids) -> str:
  """16 hex chars identifying a SID table (shape and values): checkpoints record it."""
  return cache.array_hash(sids, np.int32)


def display_text(meta) -> str:
  """An item's text for people: its title when present, else the text embedded."""
  if not meta:
    return ""
  return text_lib.clean_text(meta.get("title") or "") or text_lib.item_text(meta)


def _item_info(config, folder, key, raw, n_users, n_items):
  """Raw user / item ids and item display text, cached beside the sequences."""
  path = os.path.join(folder, f"items-{key}.json")
  info = cache.load_json(path)
  if info is None:
    raw = raw or sources.load(config)  # caches from before this file: read the source once
    meta = raw.item_meta or [None] * n_items
    info = {"users": [str(u) for u in raw.user_ids] if raw.user_ids else
                     [str(u) for u in range(n_users)],
            "items": [str(i) for i in raw.item_ids] if raw.item_ids else
                     [str(i) for i in range(1, n_items + 1)],
            "text": [display_text(m) for m in meta]}
    cache.save_json(path, info)
  return info


def _data_settings(config):
  d = config.data
  settings = {"source": d.source, "name": d.name}
  if d.source == "synthetic":
    settings["synthetic"] = d.synthetic.to_dict()
  else:
    if d.source == "interactions":
      settings["interactions"] = d.interactions.to_dict()
    settings["files"] = [cache.file_fingerprint(p) for p in sources.input_files(config)]
  return settings


def _load_sequences(config, folder, key):
  """(sequences, meta) from the cache or the source; meta: n_items, skipped, own embedding..."""
  path = os.path.join(folder, f"seq-{key}.npz")
  hit = cache.load_npz(path)
  if hit is not None:
    flat, offsets = hit["flat"], hit["offsets"]
    seqs = [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    meta = cache.load_json(path[:-4] + ".json")
    meta["ids"] = cache.load_json(os.path.join(folder, f"ids-{key}.json"))
    return seqs, meta, hit.get("own_embeddings"), None
  raw = sources.load(config)
  protocol.check_sequences(raw.sequences, raw.origin, raw.lines)
  offsets = np.concatenate([[0], np.cumsum([len(s) for s in raw.sequences])]).astype(np.int64)
  arrays = {"flat": np.concatenate(raw.sequences).astype(np.int32), "offsets": offsets}
  if raw.embeddings is not None:
    arrays["own_embeddings"] = raw.embeddings
  meta = {"n_items": raw.n_items, "skipped": raw.skipped,
          "embedding_files": list(raw.embedding_files)}
  ids = None
  if raw.user_ids is not None:  # raw-id <-> index maps, written before the sequences
    ids = {"users": raw.user_ids, "items": raw.item_ids}
    cache.save_json(os.path.join(folder, f"ids-{key}.json"), ids)
  cache.save_npz(path, **arrays)
  cache.save_json(path[:-4] + ".json", meta)
  return raw.sequences, dict(meta, ids=ids), raw.embeddings, raw


# Fields naming files the data layer reads or caches: local paths only (it reads them with
# numpy, gzip and faiss, and its cache renames files into place).
LOCAL_FIELDS = ("data.data_dir", "data.cache_dir", "data.interactions.path",
                "data.interactions.items_path", "embedding.path")


def check_local_paths(config):
  """A one-line DataError when a data field names a URL (gs://, s3://): the data and its
  cache are read from local disk, while workdirs may live in a bucket."""
  for field in LOCAL_FIELDS:
    section, *rest = field.split(".")
    value = config[section]
    for part in rest:
      value = value[part]
    if "://" in str(value):
      raise DataError(f"{field}={value}: the data and its cache must be local paths (only "
                      "--workdir may be a bucket); copy the files to this machine first "
                      "(launch/README.md, \"Workdirs on gs://\")")


def prepare_data(config, *, verbose: bool = True) -> PreparedData:
  """Builds (or loads from config.data.cache_dir) sequences, splits, embeddings and SIDs."""
  check_local_paths(config)
  d, s = config.data, config.sid
  sids_lib.nbits_of(s.codebook_size)
  folder = os.path.join(d.cache_dir, d.name)
  seq_key = cache.settings_hash(_data_settings(config))
  sequences, meta, own_emb, raw = _load_sequences(config, folder, seq_key)
  n_items = int(meta["n_items"])
  for name, count in meta["skipped"].items():
    if count:  # zero counts are still listed in the printed statistics
      logging.warning("%s: skipped %d %s", d.name, count, name)

  train, valid, test = protocol.split_sequences(sequences, int(d.max_history_len))
  train_items = protocol.training_items(sequences, n_items)

  # Embeddings: resolved against a lightweight stand-in when the sequences came from cache.
  stand_in = raw or sources.RawDataset(
      name=d.name, sequences=sequences, n_items=n_items, embeddings=own_emb,
      embedding_files=tuple(meta["embedding_files"]))
  kind, where = embeddings.resolve_source(config, stand_in)
  names = _item_info(config, folder, seq_key, raw, len(sequences), n_items)
  emb, fingerprint = None, cache.file_fingerprint(where) if kind == "file" else None
  if "workdir" in kind:  # a trained table: keyed by its values (it changes as runs go on)
    emb = embeddings.item_embeddings(config, raw or stand_in, names["items"])
    fingerprint = cache.array_hash(emb, np.float32)
  emb_settings = {"seq": seq_key, "kind": kind, "where": where, "file": fingerprint}
  emb_key = cache.settings_hash(emb_settings)
  emb_path = os.path.join(folder, f"emb-{emb_key}.npy")
  if emb is None and os.path.isfile(emb_path):
    emb = np.load(emb_path)
  elif emb is None:
    if kind == "sentence_transformers" and raw is None:
      raw = sources.load(config)  # the item text is not cached with the sequences
    emb = embeddings.item_embeddings(config, raw or stand_in, names["items"])
    cache.save_npy(emb_path, emb)
  if emb.shape[0] != n_items:
    raise DataError(f"{emb_path}: {emb.shape[0]} embedding rows for {n_items} items.")

  sid_settings = {"emb": emb_key, **{k: s[k] for k in
                                     ("n_digit", "codebook_size", "pca_dim", "whiten",
                                      "faiss_threads", "collision_free")}}
  sid_key = cache.settings_hash(sid_settings)
  sid_path = os.path.join(folder, f"sids-{sid_key}.npz")
  hit = cache.load_npz(sid_path)
  if hit is not None:
    table = hit["sids"]
    info = cache.load_json(sid_path[:-4] + ".json")
  else:
    table, info = sids_lib.build_sids(emb, train_items, s)
    cache.save_npz(sid_path, sids=table)
    cache.save_json(sid_path[:-4] + ".json", info)

  stats = {
      "name": d.name, "source": d.source, "users": len(sequences), "items": n_items,
      "interactions": int(sum(len(q) for q in sequences)), "training_rows": len(train),
      "training_items": int(train_items.sum()), "valid_rows": len(valid),
      "test_rows": len(test), "skipped": meta["skipped"],
      "embedding": {"kind": kind, "where": where, "dim": int(emb.shape[1])},
      "sid": {**sids_lib.sid_stats(table, test.target, s.codebook_size), **info},
  }
  data = PreparedData(
      name=d.name, n_users=len(sequences), n_items=n_items, n_digit=int(s.n_digit),
      codebook_size=int(s.codebook_size), sids=table, train=train, valid=valid, test=test,
      item_train_counts=np.bincount(train.target, minlength=n_items + 1).astype(np.int64),
      stats=stats, cache_key=sid_key, ids={"users": names["users"], "items": names["items"]},
      sequences=sequences, item_text=names["text"])
  if verbose:
    print(format_stats(stats))
  return data


def format_stats(stats: dict) -> str:
  """Human-readable statistics block."""
  sid = stats["sid"]
  lines = [
      f"dataset {stats['name']} ({stats['source']}): {stats['users']:,} users, "
      f"{stats['items']:,} items, {stats['interactions']:,} interactions",
      f"  training rows {stats['training_rows']:,}, training items "
      f"{stats['training_items']:,}, valid/test rows {stats['valid_rows']:,}/"
      f"{stats['test_rows']:,}",
      f"  embedding {stats['embedding']['kind']} {stats['embedding']['where']} "
      f"dim {stats['embedding']['dim']}",
      f"  SIDs: {sid['unique_sids']:,} unique, {sid['collision_groups']:,} collision groups, "
      f"largest {sid['largest_group']}, surplus items {sid['surplus_items']:,}, "
      f"codes used per digit {sid['codes_used_per_digit']} of {sid['codebook_size']}, "
      f"test targets sharing their SID {100 * sid['test_targets_sharing_sid']:.1f}%, "
      f"faiss threads {sid['faiss_threads']}, collision-free moves "
      f"{sid['collision_free_moved']}",
  ]
  lines += [f"  skipped {v:,} {k}" for k, v in stats["skipped"].items()]
  return "\n".join(lines)


def save_prepared(data: PreparedData, path: str, max_history_len: int | None = None):
  """Writes prepared data as a folder of plain files (module docstring): prepare on one
  host, train on another; training writes the same to WORKDIR/data. Local or remote paths
  (diffgrm_jax.runtime.paths)."""
  if data.sequences is None or data.ids is None:
    raise DataError("prepared data without sequences or raw ids cannot be saved; "
                    "prepare it with this version")

  def npy(name, array):
    buf = io.BytesIO()
    np.save(buf, array)
    with paths.open(paths.join(path, name), "wb") as f:
      f.write(buf.getvalue())

  lengths = np.array([len(q) for q in data.sequences], np.int64)
  npy("sids.npy", np.asarray(data.sids, np.int32))
  npy("item_train_counts.npy", np.asarray(data.item_train_counts, np.int64))
  buf = io.BytesIO()
  np.savez(buf, flat=np.concatenate(data.sequences).astype(np.int32),
           offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
  with paths.open(paths.join(path, "sequences.npz"), "wb") as f:
    f.write(buf.getvalue())
  paths.write_json(paths.join(path, "items.json"),
                   {"ids": list(data.ids["items"]), "text": list(data.item_text or [])})
  paths.write_json(paths.join(path, "users.json"), {"ids": list(data.ids["users"])})
  hist_len = max_history_len or int(data.test.hist.shape[1])
  paths.write_json(paths.join(path, "meta.json"), {  # last: a folder with it is complete
      "format": 1, "name": data.name, "n_users": data.n_users, "n_items": data.n_items,
      "n_digit": data.n_digit, "codebook_size": data.codebook_size,
      "max_history_len": hist_len, "stats": data.stats, "cache_key": data.cache_key,
      "sid_hash": sid_hash(data.sids)})


def load_prepared(path: str, max_history_len: int | None = None) -> PreparedData:
  """Reads a folder written by `save_prepared` (no pickle), rebuilding the splits from the
  sequences with `max_history_len` (default: the one it was saved with)."""
  meta_path = paths.join(path, "meta.json")
  if not paths.exists(meta_path):
    raise DataError(f"{path}: not a prepared-data folder (no meta.json); write one with "
                    "save_prepared (--export_prepared) or train into a workdir")

  def npy(name):
    with paths.open(paths.join(path, name), "rb") as f:
      z = np.load(io.BytesIO(f.read()), allow_pickle=False)
      return {k: z[k] for k in z.files} if isinstance(z, np.lib.npyio.NpzFile) else z

  try:
    meta = paths.read_json(meta_path)
    sids = npy("sids.npy").astype(np.int32)
    counts = npy("item_train_counts.npy").astype(np.int64)
    seq = npy("sequences.npz")
    items, users = paths.read_json(paths.join(path, "items.json")), paths.read_json(
        paths.join(path, "users.json"))
  except (OSError, ValueError, KeyError) as e:
    raise DataError(f"{path}: unreadable prepared data ({type(e).__name__}: {e})") from None
  flat, offsets = seq["flat"], seq["offsets"]
  sequences = [flat[offsets[u]:offsets[u + 1]] for u in range(len(offsets) - 1)]
  n_items = int(meta["n_items"])
  if sids.shape != (n_items + 1, int(meta["n_digit"])) or len(sequences) != meta["n_users"] \
      or len(items["ids"]) != n_items or len(users["ids"]) != len(sequences):
    raise DataError(f"{path}: files disagree with meta.json ({n_items} items, "
                    f"{meta['n_users']} users, SID table {sids.shape})")
  train, valid, test = protocol.split_sequences(
      sequences, int(max_history_len or meta["max_history_len"]))
  return PreparedData(
      name=meta["name"], n_users=int(meta["n_users"]), n_items=n_items,
      n_digit=int(meta["n_digit"]), codebook_size=int(meta["codebook_size"]), sids=sids,
      train=train, valid=valid, test=test, item_train_counts=counts, stats=meta["stats"],
      cache_key=meta["cache_key"], ids={"users": users["ids"], "items": items["ids"]},
      sequences=sequences, item_text=items["text"] or None)
