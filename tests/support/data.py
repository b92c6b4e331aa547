"""Helpers for the data tests: tiny configs and shared-format datasets written to tmp."""

import json
import os

import numpy as np

from support.configs import make_config

HERE = os.path.dirname(os.path.abspath(__file__))
# The shared data beside the checkout, or $DIFFGRM_DATA (as in diffgrm_jax/defaults.py).
SHARED = os.environ.get("DIFFGRM_DATA", os.path.join(HERE, "..", "..", "..", "shared", "data"))


def base_config(cache_dir):
  # 1 faiss thread: 2 OpenMP threads on a busy 2-core machine are far slower.
  return make_config(**{"data.cache_dir": str(cache_dir), "sid.codebook_size": 16,
                        "sid.pca_dim": 16, "sid.faiss_threads": 1})


def config_for(tmp_path, *, source, name):
  c = base_config(tmp_path / "cache")
  c.data.source, c.data.name, c.data.data_dir = source, name, str(tmp_path / "data")
  return c


def write_shared(tmp_path, name, lines, *, n_items, emb_dim=0, seed=0):
  """<tmp>/data/<name>/<name>.txt + derived/item_text.jsonl (+ derived/item_emb_test.npy)."""
  folder = tmp_path / "data" / name
  os.makedirs(folder / "derived", exist_ok=True)
  (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
  with open(folder / "derived" / "item_text.jsonl", "w") as f:
    for i in range(1, n_items + 1):
      f.write(json.dumps({"item_id": i, "title": f"item {i}", "categories": ["c"]}) + "\n")
  if emb_dim:
    emb = np.random.default_rng(seed).normal(size=(n_items, emb_dim)).astype(np.float16)
    np.save(folder / "derived" / "item_emb_test.npy", emb)
  return folder
