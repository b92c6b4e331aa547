"""Workdir and output paths through `etils.epath`, the path layer orbax already uses.

Local paths and bucket URLs (`gs://bucket/run`, with the `[tpu]` extra's gcsfs; `s3://`
with s3fs) take the same calls, so `--workdir=gs://...` works on a TPU VM without a mounted
bucket. Every file the package writes should go through these helpers:

  makedirs(p)            folder and parents (no error if present)
  exists(p), isdir(p)    tests
  listdir(p)             sorted entry names ([] when the folder is absent)
  rmtree(p)              a folder and its contents (no error if absent)
  open(p, mode)          file object ('r', 'w', 'rb', 'wb'); no append on object stores
  write_json(p, obj)     atomic: readers see the old file or the new one, never a part
  read_json(p)           the parsed object
  join(a, b, ...)        a path string (URLs keep their scheme)
  absolute(p)            an absolute local path; URLs unchanged (os.path.abspath would
                         turn gs://b/x into <cwd>/gs:/b/x)

tests/integration/test_write_paths.py runs training, evaluation and plotting and fails if any file
they write into the workdir is not written through etils.epath (these helpers or orbax).
"""

import json
import os
import uuid

from etils import epath


def is_remote(path) -> bool:
  """True for URLs such as gs://bucket/x (object stores: no rename, no append)."""
  return "://" in os.fspath(path)


def as_path(path) -> epath.Path:
  return epath.Path(path)


def join(*parts) -> str:
  return os.fspath(epath.Path(parts[0]).joinpath(*parts[1:]))


def absolute(path) -> str:
  return os.fspath(path) if is_remote(path) else os.path.abspath(path)


def makedirs(path) -> None:
  epath.Path(path).mkdir(parents=True, exist_ok=True)


def exists(path) -> bool:
  return epath.Path(path).exists()


def isdir(path) -> bool:
  return epath.Path(path).is_dir()


def listdir(path) -> list[str]:
  p = epath.Path(path)
  return sorted(c.name for c in p.iterdir()) if p.is_dir() else []


def rmtree(path) -> None:
  epath.Path(path).rmtree(missing_ok=True)


def open(path, mode="r"):  # pylint: disable=redefined-builtin
  """A file object for a local path or URL; 'w' modes create the parent folder."""
  p = epath.Path(path)
  if any(m in mode for m in "wax"):
    if "a" in mode and is_remote(path):
      raise ValueError(f"{path}: object stores cannot append; write the whole file")
    p.parent.mkdir(parents=True, exist_ok=True)
  return p.open(mode)


def write_text_atomic(path, text: str) -> None:
  """Writes `text` so that a reader never sees a half-written file.

  Local: a temporary file in the same folder, then os.replace. Object stores replace whole
  objects on upload, so a plain write is already atomic there.
  """
  p = epath.Path(path)
  p.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(path):
    p.write_text(text)
    return
  tmp = p.parent / f".{p.name}.{uuid.uuid4().hex}.tmp"
  try:
    tmp.write_text(text)
    os.replace(tmp, p)
  finally:
    if tmp.exists():
      tmp.unlink()


def write_json(path, obj, indent=1) -> None:
  """JSON of `obj`, written atomically (see write_text_atomic)."""
  write_text_atomic(path, json.dumps(obj, indent=indent))


def read_json(path):
  with open(path) as f:
    return json.load(f)
