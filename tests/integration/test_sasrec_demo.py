"""SASRec end to end on the embedded synthetic data: it trains and beats popularity, `eval` and
`recommend` work from --workdir alone, and an interrupted run resumes bitwise."""

import json
import math
import os
import subprocess
import sys

import pytest

from support.configs import ROOT, load_config_file
from support.runs import assert_same_run
from diffgrm_jax.training import loop as trainer


def small_sasrec(cache_dir, **changes):
  c = load_config_file("sasrec.py", "demo")
  c.data.cache_dir = str(cache_dir)
  c.data.synthetic.n_users = 1000
  c.train.batch_size = 64
  c.optim.lr = 5e-3
  c.train.epochs = 6
  c.train.checkpoint_every_epochs = 1
  for key, value in changes.items():
    section, field = key.split(".")
    c[section][field] = value
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  cache = tmp_path_factory.mktemp("cache")
  workdir = str(tmp_path_factory.mktemp("sasrec"))
  return cache, workdir, trainer.train_and_evaluate(small_sasrec(cache), workdir, progress=False)


def _command(verb, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", f"diffgrm_jax.{verb}", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_sasrec_beats_popularity_and_selects_by_item_ndcg(trained):
  _, _, s = trained
  pop = s["popularity"]["test"]
  assert s["model_kind"] == "sasrec" and s["decoding"] == "all_items"
  assert s["test"]["item/ndcg@10"] > 3 * pop["item/ndcg@10"] + 0.05, (s["test"], pop)
  assert s["test"]["sid/ndcg@10"] >= s["test"]["item/ndcg@10"] - 1e-12  # a SID hit is easier
  best = max(s["history"], key=lambda h: h["score"])
  assert best["score"] == best["item/ndcg@10"] and s["best_step"] == best["step"]
  for k in ("item/ndcg@10", "sid/recall@10"):  # validation equals the summary's evaluation
    assert math.isclose(best[k], s["valid"][k], rel_tol=1e-12, abs_tol=1e-15), k


def test_eval_and_recommend_need_only_the_workdir(trained, tmp_path):
  _, workdir, s = trained
  _command("eval", f"--workdir={workdir}")
  with open(os.path.join(workdir, "eval_test.json")) as f:
    got = json.load(f)
  for k, v in s["test"].items():
    assert math.isclose(got[k], v, rel_tol=0, abs_tol=1e-9), k
  out = tmp_path / "recs.jsonl"
  _command("recommend", f"--workdir={workdir}", f"--output={out}", "--k=5")
  rows = [json.loads(line) for line in open(out)]
  with open(os.path.join(workdir, "data", "users.json")) as f:
    assert len(rows) == len(json.load(f)["ids"])
  printed = _command("recommend", f"--workdir={workdir}", f"--user={rows[0]['user']}", "--k=3")
  assert printed.count("synthetic item") == 3
  # The user's own items are never recommended (decode.exclude_history in the recipe).
  from diffgrm_jax.evaluation.recommender import Recommender  # pylint: disable=import-outside-toplevel
  rec = Recommender.from_workdir(workdir)
  for user in (rows[0]["user"], rows[1]["user"]):
    seen = {rec.item_ids[i - 1] for i in rec.user_history(user)}
    got = rec.recommend_users([user], k=20)[0]
    assert len(got) == 20 and not seen & {r["item_id"] for r in got}


def test_an_interrupted_run_resumes_bitwise(trained, tmp_path):
  cache, workdir, s = trained
  other = str(tmp_path / "resumed")
  trainer.train_and_evaluate(small_sasrec(cache, **{"train.max_steps": 7}), other,
                             progress=False)
  trainer.train_and_evaluate(small_sasrec(cache), other, progress=False)
  assert_same_run(workdir, other, latest=[s["steps"]])
