"""On-disk cache keyed by a hash of the settings that produce each artifact."""

import hashlib
import json
import os
import tempfile

import numpy as np


def settings_hash(settings) -> str:
  """16 hex chars of sha256 over the canonical JSON of `settings`."""
  text = json.dumps(settings, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def array_hash(array, dtype) -> str:
  """16 hex chars identifying an array (its shape and its values as `dtype`)."""
  a = np.ascontiguousarray(np.asarray(array), dtype=dtype)
  return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()[:16]


def file_fingerprint(path: str):
  """(absolute path, size, mtime) or None when missing: a changed input invalidates the cache."""
  if not os.path.isfile(path):
    return None
  st = os.stat(path)
  return [os.path.abspath(path), st.st_size, int(st.st_mtime)]


def _atomic(path, write):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def save_npz(path: str, **arrays):
  def write(tmp):
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
  _atomic(path, write)


def save_npy(path: str, array):
  def write(tmp):
    with open(tmp, "wb") as f:
      np.save(f, array)
  _atomic(path, write)


def load_npz(path: str):
  """dict of arrays, or None when absent."""
  if not os.path.isfile(path):
    return None
  with np.load(path, allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def save_json(path: str, obj):
  def write(tmp):
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=1, sort_keys=True)
  _atomic(path, write)


def load_json(path: str):
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)
