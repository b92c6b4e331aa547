"""Item recommendations from a trained workdir: the `Recommender` API and its command.

  python -m diffgrm_jax.recommend --workdir=DIR --user=<raw user id>
  python -m diffgrm_jax.recommend --workdir=DIR --history=<raw item id>,<raw item id>,...
  python -m diffgrm_jax.recommend --workdir=DIR --input=histories.jsonl [--output=recs.jsonl]
  python -m diffgrm_jax.recommend --workdir=DIR --output=recs.jsonl [--split=test]

Prints the top `--k` items per history (rank, raw item id, score, title or text).
`--user` takes the user's whole sequence in the dataset as history (so the next item after
everything known is recommended); `--input` has one JSON object per line, `{"history":
[raw item ids, oldest first]}` or `{"user": raw user id}` (blank lines are skipped).
`--output` writes JSON lines instead of printing; without `--user/--history/--input` it
exports every user of `--split` (history as evaluation uses it: the sequence before the
split's target). The file is written once everything is computed, atomically: an error
leaves no half-written file.

Histories longer than `data.max_history_len` keep their most recent items (as in
training and evaluation). Items are ranked exactly as evaluation ranks them
(`evaluation.decode_batches` + `evaluation.rank_decoded`, the same batch layout and the
same compiled decoder), under `decode.item_ranking`.

Python:
  rec = Recommender.from_workdir("runs/sports")
  for r in rec.recommend([["B0000C5BRD", "B001EHSHB8"]], k=10)[0]:
    print(r["rank"], r["item_id"], r["score"], r["text"])
"""

import json
import types

from absl import flags
import jax
import numpy as np
from tqdm import tqdm

from diffgrm_jax import cli
from diffgrm_jax import data as data_lib
from diffgrm_jax import distributed
from diffgrm_jax import evaluation
from diffgrm_jax import experiment
from diffgrm_jax import host_memory
from diffgrm_jax import paths


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
  log P(SID) + log P(item | SID) under the default 'score' ranking)."""

  def __init__(self, exp, params, settings):
    self.exp, self.params, self.settings = exp, params, settings
    data = exp.data
    self.item_ids = list(data.ids["items"])
    self.item_text = list(data.item_text or [""] * data.n_items)
    self._item_index = {raw: i + 1 for i, raw in enumerate(self.item_ids)}
    self._user_index = {raw: u for u, raw in enumerate(data.ids["users"])}
    self._log_prior = exp.item_log_prior(settings.item_prior_alpha)

  @classmethod
  def from_workdir(cls, workdir, config=None, checkpoint="best", beam=None):
    """Restores the `checkpoint` ('best' or 'latest') of `workdir` (its config.json and
    data/; `config` only for workdirs without them, or to change decoding)."""
    exp = experiment.from_workdir(workdir, config)
    state, _ = experiment.restore(exp, workdir, checkpoint)
    return cls(exp, state.params, exp.decode_settings("test", beam))

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
    exp, s = self.exp, self.settings
    batches = data_lib.eval_batches(data, split, batch_size=s.batch_size,
                                    buckets=tuple(exp.config.data.length_buckets))
    n_rows = len(getattr(data, split))
    bar = tqdm(total=n_rows, desc=f"recommend ({s.describe()})", unit="user",
               disable=not progress or jax.process_index() != 0, leave=False)
    out = {}
    for local, pred, scores, valid in evaluation.decode_batches(
        {"params": self.params}, exp.model, exp.catalogue, batches, s, mesh=exp.mesh,
        batch_sharding=exp.batch_sharding, keys=("user", "weight")):
      items, item_scores = evaluation.rank_decoded(exp.catalogue, pred, scores, valid,
                                                   self._log_prior, k, s.item_ranking)
      for row, w, its, scs in zip(local["user"], local["weight"], items, item_scores):
        if w > 0:
          out[int(row)] = [{"rank": r, "item_id": self.item_ids[i - 1],
                            "text": self.item_text[i - 1], "score": float(sc)}
                           for r, (i, sc) in enumerate(zip(its, scs), 1) if i > 0]
      bar.update(int((local["weight"] > 0).sum()))
    bar.close()
    return out


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


def format_recommendations(label, recs, width=80):
  lines = [label]
  for r in recs:
    text = r["text"] if len(r["text"]) <= width else r["text"][:width - 3] + "..."
    lines.append(f"  {r['rank']:>3}  {r['item_id']:<14} {r['score']:>9.4f}  {text}")
  return "\n".join(lines)


# ---------------------------------------------------------------- command

def define_flags():
  """The CLI's flags; defined only when run as a program."""
  cli.define_config_flag("Optional: the config the workdir was trained with (needed only for "
                         "workdirs without config.json); must agree on model and sid fields.")
  flags.DEFINE_string("workdir", None, "Training workdir (config.json, data/, best/ or "
                      "checkpoints/).")
  flags.DEFINE_string("user", None, "Raw user id: recommend after the user's whole sequence.")
  flags.DEFINE_string("history", None, "Comma-separated raw item ids, oldest first.")
  flags.DEFINE_string("input", None, "JSON lines: {\"history\": [ids]} or {\"user\": id} each.")
  flags.DEFINE_string("output", None, "Write JSON lines here instead of printing; alone, "
                      "exports every user of --split.")
  flags.DEFINE_enum("split", "test", ["test", "valid"], "Split exported by --output alone.")
  flags.DEFINE_integer("k", 10, "Items per history.", lower_bound=1)
  flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to restore.")
  flags.DEFINE_integer("beam", None, "Beam width (default: decode.test_beam).")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  distributed.maybe_initialize()
  host_memory.trim_after_compiles()
  FLAGS = flags.FLAGS
  asked = [n for n in ("user", "history", "input") if FLAGS[n].value is not None]
  if len(asked) > 1:
    raise RecommendError(f"give one of --user, --history, --input, not {asked}")
  if not asked and not FLAGS.output:
    raise RecommendError("nothing to recommend: give --user, --history or --input (or "
                         "--output alone to export every user of --split)")
  if FLAGS.input:
    requests = read_requests(FLAGS.input)
  elif FLAGS.user is not None:
    requests = [("--user", {"user": FLAGS.user})]
  elif FLAGS.history is not None:
    requests = [("--history", {"history": [x.strip() for x in FLAGS.history.split(",")
                                           if x.strip()]})]
  rec = Recommender.from_workdir(FLAGS.workdir, FLAGS.config, FLAGS.checkpoint, FLAGS.beam)
  if asked:
    records = answer(rec, requests, FLAGS.k, progress=bool(FLAGS.output))
  else:
    records = rec.recommend_split(FLAGS.split, FLAGS.k, progress=True)
  if jax.process_index() != 0:
    return
  if FLAGS.output:
    paths.write_text_atomic(FLAGS.output, "".join(json.dumps(r) + "\n" for r in records))
    print(f"wrote {len(records)} recommendation lists to {FLAGS.output}")
    return
  for (where, req), r in zip(requests, records):
    what = f"user {req['user']}" if "user" in req else f"history of {len(req['history'])} items"
    label = f"{what} ({where})" if FLAGS.input else what
    print(format_recommendations(label, r["recommendations"]))


if __name__ == "__main__":
  define_flags()
  cli.run_cli(main)
