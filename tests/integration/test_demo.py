"""End to end on the embedded synthetic data: train, beat popularity, restore, re-evaluate."""

import math

import pytest

from support.configs import make_config
from diffgrm_jax import experiment
from diffgrm_jax.training import loop as trainer


def small_demo(cache_dir):
  # Smaller batches learn more per epoch; one length bucket (histories are at most 19
  # items) compiles one train step and one decoder instead of three each.
  return make_config("demo.py", **{
      "data.cache_dir": str(cache_dir), "data.synthetic.n_users": 1000,
      "data.length_buckets": (20,), "train.batch_size": 64, "train.epochs": 4,
      "train.eval_start_epoch": 2, "train.eval_every_epochs": 2, "decode.test_beam": 32})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  config = small_demo(tmp_path_factory.mktemp("cache"))
  workdir = str(tmp_path_factory.mktemp("demo"))
  summary = trainer.train_and_evaluate(config, workdir, progress=False)
  return config, workdir, summary


def test_demo_beats_popularity_by_a_clear_margin(trained):
  _, _, s = trained
  pop = s["popularity"]["valid"]["sid/ndcg@10"]
  assert s["valid"]["sid/ndcg@10"] > 3 * pop + 0.05, (s["valid"], pop)
  assert s["test"]["item/recall@10"] > 3 * s["popularity"]["test"]["item/recall@10"]
  assert s["epochs_run"] == 4 and len(s["history"]) == 2
  # The best checkpoint is the best validation score of the history.
  best = max(s["history"], key=lambda h: h["score"])
  assert s["best_step"] == best["step"]
  # Validation during training read the SID level on the device; the summary's full
  # evaluation of the same (best) checkpoint gives the same SID metrics.
  sid = {k for k in s["valid"] if k.startswith("sid/")}
  assert set(best) == {"epoch", "step", "score", "n_users"} | sid
  for k in sid | {"n_users"}:
    assert math.isclose(best[k], s["valid"][k], rel_tol=1e-12, abs_tol=1e-15), k


def test_restore_and_eval_reproduces_training_metrics(trained):
  config, workdir, s = trained
  for split in ("test", "valid"):
    beam = config.decode.test_beam if split == "test" else config.decode.valid_beam
    got = experiment.evaluate_workdir(config, workdir, split=split, beam=beam, progress=False)
    for k, v in s[split].items():
      assert math.isclose(got[k], v, rel_tol=0, abs_tol=1e-9), (split, k, got[k], v)
