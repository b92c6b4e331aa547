"""Item embeddings: the source's own vectors, a .npy file, sentence-transformers, a trained
workdir's item table (`collaborative.py`), both concatenated, or seeded random vectors."""

import logging
import os

import numpy as np

from diffgrm_jax.data import collaborative
from diffgrm_jax.data.errors import DataError
from diffgrm_jax.data.text import item_text

# Preferred precomputed file name under <data_dir>/<name>/derived/ for embedding.source='auto'.
_AUTO_FILE = "item_emb_minilm.npy"
SOURCES = ("auto", "file", "sentence_transformers", "workdir", "text+workdir", "random")
RANDOM_DIM = 64  # width of embedding.source='random'


def _auto(config, raw):
  if raw.embeddings is not None:
    return "own", ""
  if raw.embedding_files:
    names = [os.path.basename(p) for p in raw.embedding_files]
    return "file", raw.embedding_files[names.index(_AUTO_FILE) if _AUTO_FILE in names else 0]
  if config.model.kind == "sasrec":
    # SASRec ranks item ids; its SIDs only feed the SID-level columns, so data without any
    # item embedding still trains it (and its item table can then give the SIDs).
    logging.warning("dataset %r has no item embedding: random SIDs (SID-level metrics of "
                    "this run mean nothing; item-level ones are unaffected)", raw.name)
    return "random", f"seed {config.seed}"
  raise DataError(
      f"dataset {raw.name!r} has no precomputed item embedding (no derived/item_emb_*.npy): "
      "set --config.embedding.source=sentence_transformers (and embedding.model), or "
      "--config.embedding.source=file --config.embedding.path=<items.npy>, or "
      "--config.embedding.source=workdir --config.embedding.workdir=<a trained SASRec "
      "workdir> (configs/sasrec.py).")


def resolve_source(config, raw) -> tuple[str, str]:
  """(kind, where) for config.embedding: kind 'own' | 'file' | 'sentence_transformers' |
  'workdir' | 'text+workdir' | 'random'; where the path, model, workdir or seed."""
  e = config.embedding
  if e.source in ("workdir", "text+workdir"):
    if not e.workdir:
      raise DataError(f"embedding.source={e.source!r} needs embedding.workdir (a trained "
                      "SASRec workdir: configs/sasrec.py)")
    if e.source == "workdir":
      return "workdir", e.workdir
    kind, where = _auto(config, raw)
    if kind == "random":
      raise DataError(f"embedding.source='text+workdir': dataset {raw.name!r} has no text "
                      "embedding to join; use embedding.source='workdir'")
    return "text+workdir", f"{kind}:{where}+{e.workdir}"
  if e.source == "random":
    return "random", f"seed {config.seed}"
  if e.source == "auto":
    return _auto(config, raw)
  if e.source == "file":
    if not e.path:
      raise DataError("embedding.source='file' needs embedding.path (a .npy aligned with ids).")
    return "file", e.path
  if e.source == "sentence_transformers":
    return "sentence_transformers", e.model
  raise DataError(f"config.embedding.source={e.source!r} is unknown: use one of "
                  f"{', '.join(repr(x) for x in SOURCES)}.")


def load_file(path: str, n_items: int) -> np.ndarray:
  """A .npy with n_items rows (row r = item r+1) or n_items+1 rows (row r = item r)."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: embedding file not found.")
  try:
    emb = np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise DataError(f"{path}: not a readable .npy file ({e}).") from None
  if emb.ndim != 2 or emb.shape[0] not in (n_items, n_items + 1):
    raise DataError(f"{path}: embedding of shape {emb.shape}; expected [{n_items}, dim] "
                    f"(row r = item r+1) or [{n_items + 1}, dim] (row r = item r).")
  if emb.shape[0] == n_items + 1:
    emb = emb[1:]
  emb = emb.astype(np.float32)
  if not np.isfinite(emb).all():
    raise DataError(f"{path}: embedding has NaN or infinite values.")
  return emb


def _import_sentence_transformers():
  try:
    import sentence_transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(
        "embedding.source='sentence_transformers' needs the optional extra: "
        "pip install 'diffgrm_jax[text]' (sentence-transformers and torch); or use "
        f"embedding.source='file' with a precomputed .npy. (ImportError: {e})") from None
  return sentence_transformers


def encode_texts(texts, model: str, batch_size: int = 64) -> np.ndarray:
  """float32 [len(texts), dim], L2-normalised, from a sentence-transformers model name/path."""
  st = _import_sentence_transformers()
  encoder = st.SentenceTransformer(model, device="cpu")
  return np.asarray(encoder.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                   show_progress_bar=len(texts) > 1000), np.float32)


def _normalised(emb):
  return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def item_embeddings(config, raw, item_ids=None) -> np.ndarray:
  """float32 [n_items, dim] (row r = item r+1), L2-normalised. `item_ids`: the raw id of
  each item (the workdir sources match items by it)."""
  kind, where = resolve_source(config, raw)
  if kind in ("workdir", "text+workdir"):
    if item_ids is None:
      raise ValueError("the workdir sources need the raw item ids")
    emb = collaborative.item_table(config.embedding.workdir, item_ids)
    if kind == "text+workdir":  # each half normalised, so neither dominates the distances
      text = item_embeddings(_with_source(config, "auto"), raw)
      emb = np.concatenate([text, _normalised(emb)], axis=1)
  elif kind == "random":
    emb = np.random.default_rng(int(config.seed)).standard_normal(
        (raw.n_items, RANDOM_DIM)).astype(np.float32)
  elif kind == "own":
    emb = raw.embeddings
  elif kind == "file":
    emb = load_file(where, raw.n_items)
  else:
    if raw.item_meta is None:
      raise DataError(f"dataset {raw.name!r} has no item text to encode.")
    texts = [item_text(m) for m in raw.item_meta]
    logging.info("encoding %d item texts with %s", len(texts), where)
    emb = encode_texts(texts, where, config.embedding.batch_size)
  norm = np.linalg.norm(emb, axis=1, keepdims=True)
  if (norm == 0).any():
    raise DataError(f"embedding ({kind} {where}) has all-zero rows, e.g. item "
                    f"{int(np.flatnonzero(norm[:, 0] == 0)[0]) + 1}.")
  return (emb / norm).astype(np.float32)


def _with_source(config, source):
  c = config.copy_and_resolve_references()
  c.embedding.source = source
  return c
