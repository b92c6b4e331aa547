"""prepare_data: sources -> protocol -> embeddings -> SIDs, cached; the `PreparedData` record."""

import dataclasses
import gzip
import logging
import os
import pickle

import numpy as np

from diffgrm_jax.data import cache
from diffgrm_jax.data import embeddings
from diffgrm_jax.data import protocol
from diffgrm_jax.data import sids as sids_lib
from diffgrm_jax.data import sources
from diffgrm_jax.data.errors import DataError
from diffgrm_jax.data.protocol import Split


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
  # {'users': raw id of user index u, 'items': raw id of item i at [i-1]} when the source
  # has raw ids (interactions), else None.
  ids: dict | None = None


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


def prepare_data(config, *, verbose: bool = True) -> PreparedData:
  """Builds (or loads from config.data.cache_dir) sequences, splits, embeddings and SIDs."""
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
  emb_settings = {"seq": seq_key, "kind": kind, "where": where,
                  "file": cache.file_fingerprint(where) if kind == "file" else None}
  emb_key = cache.settings_hash(emb_settings)
  emb_path = os.path.join(folder, f"emb-{emb_key}.npy")
  if os.path.isfile(emb_path):
    emb = np.load(emb_path)
  else:
    if kind == "sentence_transformers" and raw is None:
      raw = sources.load(config)  # the item text is not cached with the sequences
    emb = embeddings.item_embeddings(config, raw or stand_in)
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
      stats=stats, cache_key=sid_key, ids=meta["ids"])
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


def save_prepared(data: PreparedData, path: str):
  """Writes prepared data (splits + SIDs) to a .pkl.gz: prepare on one host, train on another."""
  with gzip.open(path, "wb") as f:
    pickle.dump(data, f)


def load_prepared(path: str) -> PreparedData:
  """Reads a file written by `save_prepared` (a trusted pickle: only load your own files)."""
  with gzip.open(path, "rb") as f:
    return pickle.load(f)
