"""The path layer (etils.epath) on local paths: folders, listing, reads, atomic writes."""

import json
import os

import pytest

from diffgrm_jax.runtime import paths


def test_makedirs_exists_listdir_join(tmp_path):
  root = str(tmp_path / "run")
  assert not paths.exists(root) and paths.listdir(root) == []
  paths.makedirs(paths.join(root, "a", "b"))
  paths.makedirs(paths.join(root, "a", "b"))  # twice is fine
  assert paths.isdir(os.path.join(root, "a", "b"))
  with paths.open(paths.join(root, "z.txt"), "w") as f:
    f.write("zz")
  assert paths.listdir(root) == ["a", "z.txt"]
  assert paths.join(root, "a", "b") == os.path.join(root, "a", "b")
  assert paths.join("gs://bucket/run", "tb", "x") == "gs://bucket/run/tb/x"
  assert paths.is_remote("gs://bucket/run") and not paths.is_remote(root)


def test_open_creates_parent_and_round_trips_bytes(tmp_path):
  p = str(tmp_path / "new" / "deep" / "x.bin")
  with paths.open(p, "wb") as f:
    f.write(b"\x00\x01")
  with paths.open(p, "rb") as f:
    assert f.read() == b"\x00\x01"
  with pytest.raises(ValueError, match="cannot append"):
    paths.open("gs://bucket/x.jsonl", "a")


def test_write_json_is_atomic_and_readable(tmp_path, monkeypatch):
  p = str(tmp_path / "out" / "summary.json")
  paths.write_json(p, {"a": 1})
  assert paths.read_json(p) == {"a": 1} and json.load(open(p)) == {"a": 1}
  # A write that fails half way leaves the old file and no temporary behind.
  real = paths.epath.Path.write_text

  def broken(self, text, *a, **k):
    real(self, text[:3], *a, **k)
    raise OSError("disk full")

  monkeypatch.setattr(paths.epath.Path, "write_text", broken)
  with pytest.raises(OSError, match="disk full"):
    paths.write_json(p, {"a": 2})
  monkeypatch.undo()
  assert paths.read_json(p) == {"a": 1}
  assert os.listdir(tmp_path / "out") == ["summary.json"]


def test_absolute_keeps_urls_and_rmtree_removes_a_tree(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.absolute("run/x") == str(tmp_path / "run" / "x")
  assert paths.absolute("gs://bucket/run") == "gs://bucket/run"  # not <cwd>/gs:/bucket/run
  with paths.open(paths.join("run", "a", "b", "f.txt"), "w") as f:
    f.write("x")
  paths.rmtree(paths.join("run", "a"))
  assert paths.listdir("run") == []
  paths.rmtree(paths.join("run", "a"))  # absent: no error
