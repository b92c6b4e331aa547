"""Raw Amazon 2014 parser, the resumable downloader, and every bad-input error."""

import dataclasses
import gzip
import http.server
import json
import os
import socket
import threading

import numpy as np
import pytest

from support.data import config_for, write_shared
from diffgrm_jax.data import prepare_data
from diffgrm_jax.data import sources
from diffgrm_jax.data.errors import DataError
from diffgrm_jax.data.text import item_text

REVIEWS = [  # (reviewer, asin, time), deliberately out of time order
    {"reviewerID": "U1", "asin": "A", "unixReviewTime": 30, "overall": 5.0},
    {"reviewerID": "U2", "asin": "C", "unixReviewTime": 5},
    {"reviewerID": "U1", "asin": "B", "unixReviewTime": 10},
    {"reviewerID": "U1", "asin": "C", "unixReviewTime": 10},  # tie with B: file order kept
    {"reviewerID": "U2", "asin": "D", "unixReviewTime": 7},
    {"reviewerID": "U2", "asin": "A", "unixReviewTime": 6},
]
META_LINES = [
    "{'asin': 'B', 'title': 'Bee <i>caf\u00e9</i>', 'categories': [['Sports', 'Bikes']], "
    "'price': 3.0}",
    "{'asin': 'ZZZ', 'title': 'never reviewed'}",
    "{'asin': 'A', 'title': \"Ay's &amp; co\", 'brand': 'Acme', "
    "'related': {'also_bought': ['B']}, 'salesRank': {'Sports': 12}}",
    "{'asin': 'C', 'description': 'cee'}",
]


def _write_gz(path, lines):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def _amazon(tmp_path, name="Toys_and_Games", reviews=None, meta=None):
  folder = tmp_path / "data" / name
  _write_gz(str(folder / f"reviews_{name}_5.json.gz"),
            reviews or [json.dumps(r) for r in REVIEWS])
  _write_gz(str(folder / f"meta_{name}.json.gz"), meta or META_LINES)
  c = config_for(tmp_path, source="amazon2014", name=name)
  return c, folder


def test_amazon2014_parser(tmp_path):
  c, _ = _amazon(tmp_path)
  raw = sources.load(c)
  # U1: B(10), C(10), A(30); U2: C(5), A(6), D(7). Items numbered by first appearance.
  assert [s.tolist() for s in raw.sequences] == [[1, 2, 3], [2, 3, 4]]
  assert raw.n_items == 4
  assert item_text(raw.item_meta[0]) == ("Title: Bee caf. Price: 3.0. "
                                         "Category: Sports, Bikes.")
  assert item_text(raw.item_meta[2]) == "Title: Ay's & co. Brand: Acme."
  assert item_text(raw.item_meta[1]) == "Description: cee"
  assert raw.item_meta[3] == {"title": "D"}
  assert raw.skipped == {"meta lines of items without reviews": 1,
                         "items without metadata (text = asin)": 1}


def test_meta_parsing_never_evaluates_code(tmp_path):
  c, _ = _amazon(tmp_path, meta=["{'asin': 'A'}", "__import__('os').system('echo hacked')"])
  with pytest.raises(DataError, match=r"meta_Toys_and_Games.json.gz:2: malformed line"):
    sources.load(c)


def test_truncated_gzip(tmp_path):
  c, folder = _amazon(tmp_path, reviews=[json.dumps(REVIEWS[i % 6] | {"reviewerID": f"U{i}"})
                                         for i in range(3000)])
  path = folder / "reviews_Toys_and_Games_5.json.gz"
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(DataError, match=r"reviews_Toys_and_Games_5.json.gz: truncated or corrupt"):
    sources.load(c)


def test_malformed_review_line(tmp_path):
  c, _ = _amazon(tmp_path, reviews=[json.dumps(REVIEWS[0]), '{"reviewerID": "U1", "asin"'])
  with pytest.raises(DataError, match=r"reviews_Toys_and_Games_5.json.gz:2: malformed line"):
    sources.load(c)
  c, _ = _amazon(tmp_path, reviews=[json.dumps(REVIEWS[0]), '{"reviewerID": "U1"}'])
  with pytest.raises(DataError, match=r"json.gz:2: review lacks a valid field 'asin'"):
    sources.load(c)


def test_unknown_category_and_missing_files(tmp_path):
  c = config_for(tmp_path, source="amazon2014", name="Not_A_Category")
  with pytest.raises(DataError, match="unknown category 'Not_A_Category'"):
    sources.load(c)
  c = config_for(tmp_path, source="amazon2014", name="Beauty")
  with pytest.raises(DataError, match="reviews_Beauty_5.json.gz .* not found"):
    sources.load(c)


# ---------------------------------------------------------------- download
PAYLOAD = bytes(range(256)) * 40


class _Handler(http.server.BaseHTTPRequestHandler):
  ranges = []

  def do_GET(self):  # pylint: disable=invalid-name
    if self.path != "/file.gz":
      self.send_error(404, "Not Found")
      return
    rng = self.headers.get("Range")
    _Handler.ranges.append(rng)
    start = int(rng.split("=")[1].rstrip("-")) if rng else 0
    self.send_response(206 if rng else 200)
    self.send_header("Content-Length", str(len(PAYLOAD) - start))
    self.end_headers()
    self.wfile.write(PAYLOAD[start:])

  def log_message(self, *args):
    pass


@pytest.fixture(scope="module")
def server():
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.shutdown()
  httpd.server_close()


def test_download_and_resume(server, tmp_path):
  dest = str(tmp_path / "a" / "file.gz")
  _Handler.ranges.clear()
  assert sources.download(f"{server}/file.gz", dest) == dest
  assert open(dest, "rb").read() == PAYLOAD and _Handler.ranges == [None]
  dest2 = str(tmp_path / "b" / "file.gz")
  os.makedirs(os.path.dirname(dest2))
  with open(dest2 + ".part", "wb") as f:
    f.write(PAYLOAD[:1000])
  sources.download(f"{server}/file.gz", dest2)
  assert _Handler.ranges[-1] == "bytes=1000-"
  assert open(dest2, "rb").read() == PAYLOAD and not os.path.exists(dest2 + ".part")


def test_download_404(server, tmp_path):
  with pytest.raises(DataError, match="answered HTTP 404"):
    sources.download(f"{server}/missing.gz", str(tmp_path / "x.gz"))


def test_download_unreachable_host(tmp_path):
  sock = socket.socket()
  sock.bind(("127.0.0.1", 0))
  port = sock.getsockname()[1]
  sock.close()
  with pytest.raises(DataError, match="cannot reach the host.*offline"):
    sources.download(f"http://127.0.0.1:{port}/f.gz", str(tmp_path / "x.gz"), timeout=5)


# ---------------------------------------------------------------- shared format errors
def test_shared_missing_file(tmp_path):
  c = config_for(tmp_path, source="shared", name="Nope")
  with pytest.raises(DataError, match=r"Nope.txt: sequence file not found"):
    prepare_data(c, verbose=False)


def test_shared_malformed_line(tmp_path):
  write_shared(tmp_path, "D", ["1 1 2 3 4", "2 5 x 6"], n_items=6)
  with pytest.raises(DataError, match=r"D.txt:2: malformed line"):
    sources.load(config_for(tmp_path, source="shared", name="D"))


def test_shared_empty_user(tmp_path):
  write_shared(tmp_path, "D", ["1 1 2 3 4", "2"], n_items=6)
  with pytest.raises(DataError, match=r"D.txt:2: user 2 has no items"):
    sources.load(config_for(tmp_path, source="shared", name="D"))


@pytest.mark.parametrize("bad", ["0", "7"])
def test_shared_id_out_of_range(tmp_path, bad):
  write_shared(tmp_path, "D", ["1 1 2 3 4", f"2 5 {bad} 6"], n_items=6)
  with pytest.raises(DataError, match=rf"D.txt:2: item id {bad} out of range 1..6"):
    sources.load(config_for(tmp_path, source="shared", name="D"))


def test_dataset_too_small_for_split(tmp_path):
  write_shared(tmp_path, "D", ["1 1 2 3 4", "2 5 6", "3 1 2"], n_items=6)
  with pytest.raises(DataError, match=r"D.txt: user 1 .line 2. has 2 items; leave-one-out needs"):
    prepare_data(config_for(tmp_path, source="shared", name="D"), verbose=False)


def test_dataset_too_small_for_codebook(tmp_path):
  write_shared(tmp_path, "D", ["1 1 2 3 4 5 6", "2 5 6 1 2"], n_items=6, emb_dim=8)
  with pytest.raises(DataError, match="dataset too small: 6 training items for codebooks of 16"):
    prepare_data(config_for(tmp_path, source="shared", name="D"), verbose=False)


def test_embedding_file_of_wrong_shape(tmp_path):
  write_shared(tmp_path, "D", ["1 1 2 3 4", "2 5 6 1 2"], n_items=6)
  path = str(tmp_path / "emb.npy")
  np.save(path, np.ones((5, 8), np.float32))
  c = config_for(tmp_path, source="shared", name="D")
  c.embedding.source, c.embedding.path = "file", path
  with pytest.raises(DataError, match=r"emb.npy: embedding of shape \(5, 8\); expected \[6, dim\]"):
    prepare_data(c, verbose=False)


def test_beauty_auto_uses_its_minilm_file_and_no_vectors_needs_a_model():
  from support.data import SHARED, base_config  # pylint: disable=g-import-not-at-top
  c = base_config("/tmp/unused-cache")
  c.data.source, c.data.name, c.data.data_dir = "shared", "Beauty", SHARED
  raw = sources.load(c)
  from diffgrm_jax.data import embeddings  # pylint: disable=g-import-not-at-top
  kind, where = embeddings.resolve_source(c, raw)
  assert kind == "file" and where.endswith(os.path.join("derived", "item_emb_minilm.npy"))
  # A dataset with neither its own vectors nor a derived file must name the way out.
  bare = dataclasses.replace(raw, embedding_files=())
  with pytest.raises(DataError, match="embedding.source=sentence_transformers"):
    embeddings.resolve_source(c, bare)
