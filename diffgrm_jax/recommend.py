"""Item recommendations from a trained workdir: the command around `Recommender`.

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

Histories longer than `data.max_history_len` keep their most recent items. The library
class behind it is `diffgrm_jax.evaluation.recommender.Recommender` (also importable from
here).
"""

import json

from absl import flags
import jax

from diffgrm_jax.evaluation.recommender import RecommendError
from diffgrm_jax.evaluation.recommender import Recommender
from diffgrm_jax.evaluation.recommender import answer
from diffgrm_jax.evaluation.recommender import read_requests
from diffgrm_jax.runtime import cli
from diffgrm_jax.runtime import distributed
from diffgrm_jax.runtime import host_memory
from diffgrm_jax.runtime import paths

__all__ = ["Recommender", "RecommendError", "answer", "format_recommendations", "read_requests"]


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
