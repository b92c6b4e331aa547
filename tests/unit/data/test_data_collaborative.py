"""Item embeddings from a trained SASRec workdir (`embedding.source=workdir`): its item table
row for row, matched by raw item id, and `prepare` on interactions alone with the network
refused."""

import os
import subprocess
import sys

import numpy as np
import pytest

from support.configs import ROOT, load_config_file
from support.runs import checkpoint
from diffgrm_jax.data import collaborative
from diffgrm_jax.data import embeddings
from diffgrm_jax.data import sources
from diffgrm_jax.data.errors import DataError
from diffgrm_jax.training import loop as trainer

GUARD = os.path.join(ROOT, "tests", "support", "loopback_only.py")


def _csv(path, rows):
  path.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
  return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A SASRec workdir trained on an interactions file with no item table (so random SIDs)."""
  tmp = tmp_path_factory.mktemp("collab")
  rng = np.random.default_rng(0)
  rows = [(f"u{u}", f"sku-{rng.integers(0, 40)}", t) for u in range(120)
          for t in range(rng.integers(4, 9))]
  c = load_config_file("sasrec.py", "demo")
  c.data.source, c.data.name = "interactions", "own"
  c.data.interactions.path = _csv(tmp / "a.csv", rows)
  c.data.interactions.kcore = 1
  c.data.cache_dir = str(tmp / "cache")
  c.train.epochs, c.train.batch_size = 1, 32
  workdir = str(tmp / "sasrec")
  trainer.train_and_evaluate(c, workdir, progress=False)
  return tmp, rows, c, workdir


def test_the_table_is_the_trained_one_row_for_row_by_raw_id(trained):
  _, _, config, workdir = trained
  table, ids = collaborative.read_table(workdir)
  best = os.path.join(workdir, "best")
  leaves, _ = checkpoint(os.path.join(best, max(os.listdir(best), key=int)))
  saved = [x for x in leaves if x.shape == table.shape]
  assert len(saved) == 3 and any(np.array_equal(x, table) for x in saved)  # param + Adam moments
  order = list(reversed(ids))[:25]
  np.testing.assert_array_equal(collaborative.item_table(workdir, order),
                                table[[ids.index(i) + 1 for i in order]])
  with pytest.raises(DataError, match=r"1 of 2 items are not in its catalogue, e\.g\. 'nope'"):
    collaborative.item_table(workdir, [ids[0], "nope"])
  # The embedding the SIDs are built from: the rows, normalised (no padding row).
  config = config.copy_and_resolve_references()
  config.embedding.source, config.embedding.workdir = "workdir", workdir
  raw = sources.load(config)
  emb = embeddings.item_embeddings(config, raw, raw.item_ids)
  want = table[[ids.index(str(i)) + 1 for i in raw.item_ids]]
  np.testing.assert_allclose(emb, want / np.linalg.norm(want, axis=1, keepdims=True), rtol=1e-6)
  # Joining text needs a text embedding, which this dataset lacks.
  config.embedding.source = "text+workdir"
  with pytest.raises(DataError, match="no text embedding to join"):
    embeddings.item_embeddings(config, raw, raw.item_ids)


def test_prepare_on_interactions_alone_offline(trained):
  tmp, rows, config, workdir = trained
  # Another file of the same items in another order: item indices differ, raw ids match.
  other = _csv(tmp / "b.csv", list(reversed(rows)))
  cache = str(tmp / "cache_b")
  cmd = [sys.executable, GUARD, "-m", "diffgrm_jax.prepare", "--config=configs/demo.py",
         "--config.data.source=interactions", "--config.data.name=own",
         f"--config.data.interactions.path={other}", "--config.data.interactions.kcore=1",
         f"--config.data.cache_dir={cache}", "--config.embedding.source=workdir",
         f"--config.embedding.workdir={workdir}"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"embedding workdir {workdir} dim 64" in out.stdout
  # Without the workdir (and no text, no embedding file) DIFF_GRM's prepare says what to do.
  bad = subprocess.run(cmd[:-2], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert bad.returncode != 0 and "embedding.source=workdir" in bad.stderr
