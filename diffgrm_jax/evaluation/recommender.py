"""`Recommender`: a trained workdir answering with ranked items (raw ids, text, scores).

  rec = Recommender.from_workdir("runs/sports")
  for r in rec.recommend([["B0000C5BRD", "B001EHSHB8"]], k=10)[0]:
    print(r["rank"], r["item_id"], r["score"], r["text"])

Histories longer than `data.max_history_len` keep their most recent items (as in
training and evaluation). Items are ranked exactly as evaluation ranks them
(`evaluate.decode_batches` + `evaluate.rank_decoded`, the same batch layout and the same
compiled decoder), under `decode.item_ranking`. `read_requests` and `answer` serve the
command's `--input` files (`python -m diffgrm_jax.recommend`).
"""

import json
import types

import jax
import numpy as np
from tqdm import tqdm

from diffgrm_jax import data as data_lib
from diffgrm_jax import experiment
from diffgrm_jax.evaluation import evaluate as evaluation
from diffgrm_jax.evaluation import item_scores
from diffgrm_jax.runtime import cli
from diffgrm_jax.runtime import paths


class RecommendError(cli.UserError, ValueError):
  """A request the model cannot answer: unknown ids, an empty history, a malformed line."""


def _split_of(histories, max_len):
  """Rows of item-id histories as a `data.Split` (most recent `max_len` items kept)."""
  n = len(histories)
  hist = np.zeros((n, max_len), np.int32)
  length = np.zeros(n, np.int32)
  for r, h in enumerate(histories):
    h = np.asarray(h, np.int32)[-max_len:]
    hist[r, :len(h)], length[r] = h, len(h)
  return data_lib.Split(hist, length, np.zeros(n, np.int32), np.arange(n, dtype=np.int32))


class Recommender:
  """A trained model ready to recommend: `recommend(histories, k)` -> per history a list of
  {'rank', 'item_id', 'text', 'score'} dicts, best first (`score`: the item-ranking score,
  log P(SID) + log P(item | SID) under the default 'score' ranking; for SASRec the item's
  logit)."""

  def __init__(self, exp, params, search, ranking_settings=None):
    self.exp, self.params, self.search = exp, params, search
    self.ranking = ranking_settings or exp.ranking_settings
    data = exp.data
    self.item_ids = list(data.ids["items"])
    self.item_text = list(data.item_text or [""] * data.n_items)
    self._item_index = {raw: i + 1 for i, raw in enumerate(self.item_ids)}
    self._user_index = {raw: u for u, raw in enumerate(data.ids["users"])}
    self._log_prior = exp.item_log_prior(self.ranking.item_prior_alpha)

  @classmethod
  def from_workdir(cls, workdir, config=None, checkpoint="best", beam=None):
    """Restores the `checkpoint` ('best' or 'latest') of `workdir` (its config.json and
    data/; `config` only for workdirs without them, or to change decoding)."""
    exp = experiment.from_workdir(workdir, config)
    state, _ = experiment.restore(exp, workdir, checkpoint)
    return cls(exp, state.params, exp.search_settings("test", beam))

  def history_of(self, raw_items, where="history"):
    """Raw item ids -> item ids (RecommendError naming `where` for unknown ids / empty)."""
    if isinstance(raw_items, (str, bytes)) or not hasattr(raw_items, "__len__"):
      raise RecommendError(f"{where}: a history is a list of item ids, got {raw_items!r}")
    if not len(raw_items):
      raise RecommendError(f"{where}: empty history; give at least one item id")
    out = []
    for pos, raw in enumerate(raw_items, 1):
      i = self._item_index.get(str(raw))
      if i is None:
        raise RecommendError(f"{where}: unknown item id {str(raw)!r} (position {pos}); the "
                             f"model knows {len(self.item_ids):,} items")
      out.append(i)
    return out

  def user_history(self, raw_user, where="user"):
    """The user's whole sequence in the dataset (item ids, oldest first)."""
    u = self._user_index.get(str(raw_user))
    if u is None:
      raise RecommendError(f"{where}: unknown user id {str(raw_user)!r}; the dataset has "
                           f"{len(self._user_index):,} users")
    return np.asarray(self.exp.data.sequences[u])

  def recommend(self, histories, k=10, progress=False):
    """histories: lists of raw item ids (oldest first) -> per history its top-k items."""
    ids = [self.history_of(h, f"history {n}") for n, h in enumerate(histories, 1)]
    return self.recommend_item_ids(ids, k, progress)

  def recommend_users(self, users, k=10, progress=False):
    """Raw user ids -> per user the top-k items after the whole sequence."""
    return self.recommend_item_ids([self.user_history(u) for u in users], k, progress)

  def recommend_split(self, split="test", k=10, progress=True):
    """Every user of `split` with the history evaluation uses -> list of
    {'user', 'target', 'recommendations'} (raw ids)."""
    data = self.exp.data
    rows = getattr(data, split)
    recs = self._rank(data, split, k, progress)
    return [{"user": data.ids["users"][int(u)], "target": self.item_ids[int(t) - 1],
             "recommendations": recs[r]}
            for r, (u, t) in enumerate(zip(rows.user, rows.target))]

  def recommend_item_ids(self, histories, k=10, progress=False):
    """Item-id histories (1..n_items) -> per history its top-k items."""
    if not histories:
      return []
    split = _split_of(histories, int(self.exp.config.data.max_history_len))
    recs = self._rank(types.SimpleNamespace(sids=self.exp.data.sids, test=split), "test", k,
                      progress)
    return [recs[r] for r in range(len(histories))]

  def _rank(self, data, split, k, progress):
    """{row: recommendations} for every row of `data.<split>`, through evaluation's batch
    layout, compiled decoder and item ranking."""
    exp, s = self.exp, self.search
    batches = data_lib.eval_batches(data, split, batch_size=s.batch_size,
                                    buckets=tuple(exp.config.data.length_buckets))
    n_rows = len(getattr(data, split))
    what = "all items" if exp.scores_items else s.describe()
    bar = tqdm(total=n_rows, desc=f"recommend ({what})", unit="user",
               disable=not progress or jax.process_index() != 0, leave=False)
    out = {}
    for local, items, scores in self._ranked(batches, k):
      for row, w, its, scs in zip(local["user"], local["weight"], items, scores):
        if w > 0:
          out[int(row)] = [{"rank": r, "item_id": self.item_ids[i - 1],
                            "text": self.item_text[i - 1], "score": float(sc)}
                           for r, (i, sc) in enumerate(zip(its, scs), 1) if i > 0]
      bar.update(int((local["weight"] > 0).sum()))
    bar.close()
    return out

  def _ranked(self, batches, k):
    """(rows, items [b, k], scores [b, k]) per batch: decoded SIDs ranked into items, or
    for SASRec its item scores."""
    exp, variables = self.exp, {"params": self.params}
    if exp.scores_items:
      yield from item_scores.top_items(variables, exp.model, batches,
                                       min(int(k), exp.data.n_items),
                                       exclude_history=exp.config.decode.exclude_history,
                                       batch_sharding=exp.batch_sharding)
      return
    for local, pred, scores, valid in evaluation.decode_batches(
        variables, exp.model, exp.catalogue, batches, self.search, mesh=exp.mesh,
        batch_sharding=exp.batch_sharding, keys=("user", "weight")):
      items, ranked_scores = evaluation.rank_decoded(exp.catalogue, pred, scores, valid,
                                                    self._log_prior, k,
                                                    self.ranking.item_ranking)
      yield local, items, ranked_scores


def read_requests(path):
  """--input file -> list of (label, {'history': [...]} or {'user': id}); a malformed line
  is a one-line RecommendError naming the file and line."""
  if not paths.exists(path):
    raise RecommendError(f"--input={path}: no such file")
  out = []
  with paths.open(path) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{lineno}"
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise RecommendError(f"{where}: not JSON ({e.msg})") from None
      if not isinstance(rec, dict) or ("history" in rec) == ("user" in rec):
        raise RecommendError(f"{where}: expected an object with either \"history\" (a list "
                             "of item ids) or \"user\"")
      if "history" in rec and not isinstance(rec["history"], list):
        raise RecommendError(f"{where}: \"history\" must be a list of item ids")
      out.append((where, rec))
  if not out:
    raise RecommendError(f"--input={path}: no requests in the file")
  return out


def answer(rec, requests, k, progress=False):
  """(label, request) pairs -> output records {**request, 'recommendations': [...]}."""
  ids = [rec.user_history(r["user"], where) if "user" in r else rec.history_of(r["history"], where)
         for where, r in requests]
  recs = rec.recommend_item_ids(ids, k, progress)
  return [dict(r, recommendations=x) for (_, r), x in zip(requests, recs)]
