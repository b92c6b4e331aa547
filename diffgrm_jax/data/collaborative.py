"""Item embeddings from a trained workdir: the item table a SASRec run learned.

`embedding.source='workdir'` (with `embedding.workdir=DIR`) builds the semantic IDs from
the rows of DIR's item table instead of item text, so a dataset with no text, and a machine
with no network, can still be prepared: train SASRec on the interactions
(configs/sasrec.py), then prepare DIFF_GRM's SIDs from its table. Items are matched by
their raw ids (DIR/data/items.json), so the new dataset may order or filter its items
differently; every item it has must be in DIR's catalogue. The table is read from DIR's
best checkpoint (its latest when it has no best), as plain arrays: no model is built.
"""

import jax
import numpy as np
import orbax.checkpoint as ocp

from diffgrm_jax.data.errors import DataError
from diffgrm_jax.runtime import paths

TABLE = "item_embedding"  # the parameter holding SASRec's item table (model/sasrec.py)


def _step_folder(workdir):
  for sub in ("best", "checkpoints"):
    folder = paths.join(workdir, sub)
    if paths.isdir(folder):
      steps = [int(n) for n in paths.listdir(folder) if n.isdigit()
               and paths.exists(paths.join(folder, n, "state"))]
      if steps:
        return paths.join(folder, str(max(steps)), "state")
  raise DataError(f"embedding.workdir={workdir}: no checkpoint there (train it first, e.g. "
                  "python -m diffgrm_jax.train --config=configs/sasrec.py:... "
                  f"--workdir={workdir})")


def read_table(workdir):
  """(table float32 [n_items + 1, D] with row i = item i, raw item ids of items 1..n)."""
  items_path = paths.join(workdir, "data", "items.json")
  if not paths.exists(items_path):
    raise DataError(f"embedding.workdir={workdir}: no data/items.json (not a training "
                    "workdir, or one from before workdirs kept their data)")
  folder = _step_folder(workdir)
  try:
    ckpt = ocp.PyTreeCheckpointer()
    tree = ckpt.metadata(paths.absolute(folder)).item_metadata.tree
    params = tree.get("params", {}) if isinstance(tree, dict) else {}
    if TABLE not in params:
      raise DataError(f"embedding.workdir={workdir}: its model has no item table (only "
                      "model.kind='sasrec' learns one)")
    # The whole state as numpy arrays (a SASRec state is a few MB): no devices, no model.
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    restored = ckpt.restore(paths.absolute(folder),
                            args=ocp.args.PyTreeRestore(restore_args=args))
  except DataError:
    raise
  except Exception as e:  # orbax raises many types for damaged files
    raise DataError(f"embedding.workdir={workdir}: unreadable checkpoint {folder} "
                    f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
  table = np.asarray(restored["params"][TABLE], np.float32)
  ids = [str(i) for i in paths.read_json(items_path)["ids"]]
  if table.shape[0] != len(ids) + 1:
    raise DataError(f"embedding.workdir={workdir}: item table of {table.shape[0]} rows for "
                    f"{len(ids)} items in data/items.json")
  return table, ids


def item_table(workdir, item_ids):
  """float32 [len(item_ids), D]: the workdir's row of each raw item id (the padding row 0
  is never used); a DataError names the first item it lacks."""
  table, ids = read_table(workdir)
  row = {raw: i + 1 for i, raw in enumerate(ids)}
  missing = [raw for raw in item_ids if str(raw) not in row]
  if missing:
    raise DataError(f"embedding.workdir={workdir}: {len(missing):,} of {len(item_ids):,} "
                    f"items are not in its catalogue, e.g. {missing[0]!r}; train it on this "
                    "dataset")
  return table[[row[str(raw)] for raw in item_ids]]
