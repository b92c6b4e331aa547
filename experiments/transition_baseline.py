"""A first-order transition baseline: rank items by how often they followed the user's last item.

  python experiments/transition_baseline.py --config=configs/sasrec.py:beauty [--out=FILE.json]

Counts every consecutive pair (a, b) in the training sequences (each user's items without
the validation and test targets, as every model here trains on) and scores item b after a
history ending in a by count(a, b), ties broken by training popularity, then by the lower
id. The history's own items are not ranked (as SASRec's `decode.exclude_history`). Item
level Recall/NDCG@5/10 on validation and test, with the same metric code as the models.
It is what a sequential model should beat: a model below it has not learnt which item
follows which. Prints one JSON object (and writes it to --out).
"""

import json

from absl import app
from absl import flags
import numpy as np
from ml_collections import config_flags

from diffgrm_jax import data as data_lib
from diffgrm_jax.evaluation import metrics as metrics_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe whose data to use.",
                                          lock_config=True)
flags.DEFINE_string("out", "", "Also write the JSON object here.")
FLAGS = flags.FLAGS


def transition_counts(sequences, n_items):
  """(indptr, next_items, counts): for item a, next_items[indptr[a]:indptr[a+1]] are the
  items seen right after it in training and counts how often (CSR rows)."""
  pairs = [np.stack([s[:-3], s[1:-2]], 1) for s in sequences if len(s) > 3]
  pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
  key, counts = np.unique(pairs[:, 0].astype(np.int64) * (n_items + 1) + pairs[:, 1],
                          return_counts=True)
  src, dst = key // (n_items + 1), key % (n_items + 1)
  indptr = np.searchsorted(src, np.arange(n_items + 2))
  return indptr, dst, counts


def ranks(split, indptr, nxt, counts, popularity):
  """Item rank of each row's target (0 = first) under the transition scores."""
  n = len(popularity)
  # Popularity and id break ties: a strictly decreasing base order over items.
  base = np.argsort(np.lexsort((np.arange(n), -popularity)))  # position in popularity order
  tie = 1.0 - (base + 1) / (n + 1)  # in (0, 1), larger = more popular
  out = np.empty(len(split.target), np.int64)
  for r in range(len(split.target)):
    hist = split.hist[r, :split.length[r]]
    a = hist[-1]
    score = tie.copy()
    lo, hi = indptr[a], indptr[a + 1]
    score[nxt[lo:hi]] += counts[lo:hi]
    score[hist] = -np.inf
    score[0] = -np.inf
    out[r] = int(np.count_nonzero(score > score[split.target[r]]))
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  data = data_lib.prepare_data(config, verbose=False)
  indptr, nxt, counts = transition_counts(data.sequences, data.n_items)
  popularity = np.asarray(data.item_train_counts, np.float64)
  result = {"dataset": data.name, "model": "first-order transitions", "pairs": int(counts.sum())}
  for split in ("valid", "test"):
    r = ranks(getattr(data, split), indptr, nxt, counts, popularity)
    result[split] = {f"item/{k}": v for k, v in metrics_lib.recall_ndcg(r).items()}
  text = json.dumps(result, indent=1)
  print(text)
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
