"""Recommendations, item-level metrics and self-contained workdirs on the tiny reference run
(conftest.reference_run, trained by the real `train` command)."""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from support.configs import ROOT
from support.runs import TIMEOUT, saved_steps, subprocess_env, tail, tiny_run_config

from diffgrm_jax import data as data_lib
from diffgrm_jax import experiment
from diffgrm_jax import workdir as workdir_lib
from diffgrm_jax.decoding import decoders
from diffgrm_jax.decoding import settings as decoding
from diffgrm_jax.evaluation import evaluate as evaluation
from diffgrm_jax.evaluation import metrics
from diffgrm_jax.evaluation import recommender
from diffgrm_jax.sid import ranking
from diffgrm_jax.training import checkpointing


@pytest.fixture(scope="module")
def rec(reference_run):
  return recommender.Recommender.from_workdir(reference_run)


def _run(args):
  return subprocess.run([sys.executable, "-m"] + args, capture_output=True, text=True,
                        timeout=TIMEOUT, cwd=ROOT, env=subprocess_env())


def _one_line_error(proc, pattern):
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, tail(proc.stderr)
  assert re.fullmatch(pattern, lines[-1]), lines[-1]


def test_workdir_holds_config_and_plain_data(reference_run, run_data):
  files = sorted(os.listdir(os.path.join(reference_run, "data")))
  assert files == ["item_train_counts.npy", "items.json", "meta.json", "sequences.npz",
                   "sids.npy", "users.json"]
  config = workdir_lib.load_config(reference_run)
  assert config.model.d_model == 16 and config.data.length_buckets == (8,)
  data = workdir_lib.load_data(reference_run, config)
  # Rebuilt from the sequences alone: the same splits, SIDs and counts as prepared.
  for split in ("train", "valid", "test"):
    a, b = getattr(data, split), getattr(run_data, split)
    for f in ("hist", "length", "target", "user"):
      np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
  np.testing.assert_array_equal(data.sids, run_data.sids)
  np.testing.assert_array_equal(data.item_train_counts, run_data.item_train_counts)
  assert data.ids == run_data.ids and data.ids["items"][:2] == ["1", "2"]
  assert data.item_text[0] == "synthetic item 1"


def test_prepared_export_round_trip_is_plain_files(run_data, tmp_path):
  data_lib.save_prepared(run_data, str(tmp_path / "p"))
  back = data_lib.load_prepared(str(tmp_path / "p"), max_history_len=4)
  assert back.test.hist.shape[1] == 4  # splits rebuilt with the length asked for
  np.testing.assert_array_equal(back.test.target, run_data.test.target)
  with pytest.raises(data_lib.DataError, match="not a prepared-data folder"):
    data_lib.load_prepared(str(tmp_path))


def test_recommend_returns_what_evaluation_ranked(reference_run, rec):
  exp = experiment.from_workdir(reference_run)
  state, _ = experiment.restore(exp, reference_run)
  got = exp.evaluate(state.params, "test", progress=False, keep_items=True)
  ranked = got["ranked_items"]
  data = rec.exp.data
  assert sorted(ranked) == list(range(data.n_users))
  ids = data.ids["items"]
  histories = [[ids[i - 1] for i in data.test.hist[r, :data.test.length[r]]]
               for r in range(len(data.test))]
  out = rec.recommend(histories, k=10)
  for r, u in enumerate(data.test.user):
    assert [x["item_id"] for x in out[r]] == [ids[i - 1] for i in ranked[int(u)]]
    assert [x["rank"] for x in out[r]] == list(range(1, len(out[r]) + 1))
    scores = [x["score"] for x in out[r]]
    assert scores == sorted(scores, reverse=True)
  # The split export ranks the same lists, with raw user and target ids.
  split = rec.recommend_split("test", k=10, progress=False)
  assert [s["recommendations"] for s in split] == out
  assert split[0]["user"] == data.ids["users"][int(data.test.user[0])]
  # --user: the whole sequence is the history (its last item is the test target).
  seq = data.sequences[5]
  assert rec.recommend_users([data.ids["users"][5]])[0] == rec.recommend(
      [[ids[i - 1] for i in seq]])[0]
  # A history longer than max_history_len keeps its most recent items.
  long = [ids[r % 60] for r in range(20)]
  assert rec.recommend([long])[0] == rec.recommend([long[-8:]])[0]
  assert rec.recommend([long])[0] != rec.recommend([long[-7:]])[0]


def test_bad_requests_are_one_line_errors(rec, tmp_path):
  with pytest.raises(recommender.RecommendError, match=r"history 2: unknown item id 'nope' \(position 2\)"):
    rec.recommend([["1"], ["1", "nope"]])
  with pytest.raises(recommender.RecommendError, match="history 1: empty history"):
    rec.recommend([[]])
  with pytest.raises(recommender.RecommendError, match="unknown user id 'ghost'"):
    rec.recommend_users(["ghost"])
  bad = tmp_path / "in.jsonl"
  bad.write_text('{"history": ["1", "2"]}\n\n{"history": ["1"\n')
  with pytest.raises(recommender.RecommendError, match=rf"{re.escape(str(bad))}:3: not JSON"):
    recommender.read_requests(str(bad))
  bad.write_text('{"user": "1", "history": ["2"]}\n')
  with pytest.raises(recommender.RecommendError, match=r":1: expected an object with either"):
    recommender.read_requests(str(bad))


def test_recommend_cli_output_and_errors(reference_run, tmp_path):
  """The command: an export, and errors that leave no output file."""
  good, bad, out = tmp_path / "good.jsonl", tmp_path / "bad.jsonl", tmp_path / "out.jsonl"
  good.write_text('{"history": ["3", "4"]}\n{"user": "7"}\n')
  bad.write_text('{"history": ["3", "4"]}\n{"history": ["3", "404"]}\n')
  empty = tmp_path / "empty"
  empty.mkdir()
  shutil.copy(os.path.join(reference_run, "config.json"), empty / "config.json")
  base = ["diffgrm_jax.recommend", f"--workdir={reference_run}"]
  procs = {
      "ok": _run(base + [f"--input={good}", f"--output={out}", "--k=3"]),
      "bad": _run(base + [f"--input={bad}", f"--output={tmp_path / 'never.jsonl'}"]),
      "no ckpt": _run(["diffgrm_jax.recommend", f"--workdir={empty}", "--history=3"]),
  }
  assert procs["ok"].returncode == 0, tail(procs["ok"].stderr)
  lines = [json.loads(l) for l in out.read_text().splitlines()]
  assert [len(l["recommendations"]) for l in lines] == [3, 3] and lines[1]["user"] == "7"
  _one_line_error(procs["bad"], rf"error: {re.escape(str(bad))}:2: unknown item id '404' "
                  r"\(position 2\); the model knows 60 items")
  assert not os.path.exists(tmp_path / "never.jsonl")
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
  _one_line_error(procs["no ckpt"], rf"error: no best checkpoint in {re.escape(str(empty))}; "
                  r"train first .*")


def test_item_metrics_equal_rank_items_by_hand(reference_run):
  """Evaluation's item/ and item_expand/ metrics against ranking.rank_items on the decoded
  SIDs, recomputed here; more SIDs decoded than the SID level ranks."""
  exp = experiment.from_workdir(reference_run)
  state, _ = experiment.restore(exp, reference_run)
  settings = decoding.SearchSettings("confidence", (16,) * 4, top_k=10, item_sids=16,
                                     batch_size=32)
  got = exp.evaluate(state.params, "test", settings, progress=False)
  data, cat = exp.data, exp.catalogue
  dec = jax.jit(decoders.make_decoder(exp.model, cat, settings))
  t = data.test
  pred, scores, valid = map(np.asarray, dec({"params": state.params}, data.sids[t.hist],
                                            t.hist > 0))
  assert pred.shape[1] == 16 and valid[:, 10:].any()
  groups = np.where(valid, cat.sid_group(pred), -1)
  prior = ranking.item_log_prior(cat, data.item_train_counts, 1.0)
  for key, method in (("item", "score"), ("item_expand", "expand")):
    items, _ = ranking.rank_items(cat, groups, scores, prior, 10, method)
    hit = items == t.target[:, None]
    rank = np.where(hit.any(1), hit.argmax(1), 10 ** 6)
    for k in (5, 10):
      assert got[f"{key}/recall@{k}"] == pytest.approx(np.mean(rank < k), abs=1e-6)
      assert got[f"{key}/ndcg@{k}"] == pytest.approx(
          np.mean(np.where(rank < k, 1 / np.log2(rank + 2.0), 0)), abs=1e-6)
  want_sid = metrics.recall_ndcg(metrics.sid_ranks(pred[:, :10], valid[:, :10],
                                                   data.sids[t.target]))
  assert got["sid/recall@10"] == pytest.approx(want_sid["recall@10"], abs=1e-6)


def test_workdir_only_eval_reproduces_training_and_checks_the_sid_table(reference_run, tmp_path):
  summary = json.load(open(os.path.join(reference_run, "summary.json")))
  got = experiment.evaluate_workdir(None, reference_run, progress=False)
  for key, value in summary["test"].items():
    assert got[key] == pytest.approx(value, abs=1e-9), key
  assert "item_expand/recall@10" in got
  # Another SID table of the same shape: refused before any decoding, naming both hashes.
  other = str(tmp_path / "other")
  shutil.copytree(reference_run, other)
  path = os.path.join(other, "data", "sids.npy")
  sids = np.load(path)
  sids[[1, 2]] = sids[[2, 1]]
  np.save(path, sids)
  trained, now = data_lib.sid_hash(np.load(os.path.join(reference_run, "data", "sids.npy"))), \
      data_lib.sid_hash(sids)
  proc = _run(["diffgrm_jax.eval", f"--workdir={other}"])
  best = saved_steps(os.path.join(other, "best"))[-1]
  _one_line_error(proc, rf"error: best checkpoint {re.escape(other)}/best/{best} was trained with "
                  rf"SID table {trained}, but the SID table here is {now}; .*")
  # A config that disagrees with the trained one is refused too.
  config = tiny_run_config("unused", **{"model.d_model": 32})
  with pytest.raises(workdir_lib.WorkdirError, match=r"model.d_model=32 given, 16 trained"):
    workdir_lib.load_config(reference_run, config)


def test_workdir_from_before_config_json_needs_config(reference_run, run_cache, tmp_path):
  """A workdir without config.json, data/ and SID hash (older code) evaluates with --config."""
  old = str(tmp_path / "old")
  shutil.copytree(reference_run, old)
  shutil.rmtree(os.path.join(old, "data"))
  os.remove(os.path.join(old, "config.json"))
  best = saved_steps(os.path.join(old, "best"))[-1]
  meta_file = os.path.join(old, "best", str(best), "meta", "metadata")
  meta = json.load(open(meta_file))
  del meta["sid_hash"]
  json.dump(meta, open(meta_file, "w"))
  with pytest.raises(workdir_lib.WorkdirError, match="has no config.json .* pass the --config"):
    experiment.evaluate_workdir(None, old, progress=False)
  got = experiment.evaluate_workdir(tiny_run_config(run_cache), old, progress=False)
  summary = json.load(open(os.path.join(reference_run, "summary.json")))
  assert got["item/recall@10"] == pytest.approx(summary["test"]["item/recall@10"])


def test_decode_settings_resolve_the_item_sids():
  c = tiny_run_config("unused", **{"decode.step_beams": (), "decode.test_beam": 32})
  assert decoding.SearchSettings.from_config(c, "test").item_sids == 32  # 0: every final beam
  c.decode.item_sids = 5
  assert decoding.SearchSettings.from_config(c, "test").item_sids == 10  # at least top_k
  c.decode.item_sids, c.decode.item_ranking = 50, "expand"
  s = decoding.SearchSettings.from_config(c, "test")
  assert s.item_sids == 32  # at most the last beam width
  assert decoding.RankingSettings.from_config(c).item_ranking == "expand"
  # The ranking is no part of the search (the compiled decoder's cache key).
  assert s == decoding.SearchSettings.from_config(
      tiny_run_config("unused", **{"decode.step_beams": (), "decode.test_beam": 32,
                                   "decode.item_sids": 50}), "test")
