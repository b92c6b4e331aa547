"""What a training workdir holds besides checkpoints, so that it can be used on its own.

  WORKDIR/config.json     the resolved config of the run (plain JSON)
  WORKDIR/data/           the prepared data in `data.save_prepared`'s plain format: SID
                          table, item training counts, user sequences, raw user and item
                          ids, item text (no pickle: a workdir may come from someone else)
  WORKDIR/checkpoints/, best/, tb/, summary.json   (training/checkpointing.py, training/loop.py)

`save` writes the first two when training starts; `load_config` / `load_data` read them
back, so `eval` and `recommend` need only `--workdir`. A config given as well must agree
with the trained one on every field that fixes the model or the SIDs. Workdirs from before
these files need `--config` (their data is prepared from it, as when they were trained).
"""

import ml_collections

from diffgrm_jax import data as data_lib
from diffgrm_jax import defaults
from diffgrm_jax.runtime import cli
from diffgrm_jax.runtime import paths

CONFIG = "config.json"
DATA = "data"
# Fields that may differ between training and later use: they change no parameter or SID.
_FREE = {f"model.{f}" for f in defaults.FREE_MODEL_FIELDS} | {"sid.faiss_threads"}
# Fields added after workdirs first kept their config, with the value that reproduces what
# a run did before the field existed (the default in defaults.py may differ): a resumed or
# evaluated old workdir goes on as it was trained.
_BEFORE_FIELD = {("train", "micro_batches"): 1, ("train", "masked_last_block"): False,
                 ("train", "step_programs"): 2}


class WorkdirError(cli.UserError, ValueError):
  """A workdir that lacks what a command needs, or a config that disagrees with it."""


def save(workdir, config, data):
  """Writes config.json and data/ (process 0 only; the caller decides). Data built by hand
  without sequences or raw ids (some tests) is not written."""
  paths.write_json(paths.join(workdir, CONFIG), config.to_dict())
  if data.sequences is not None and data.ids is not None:
    data_lib.save_prepared(data, paths.join(workdir, DATA), int(config.data.max_history_len))


def _tuples(value):
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def config_from_dict(obj):
  """A config: the defaults with the values of `obj` (from config.json; lists become the
  tuples the defaults hold). Fields the defaults lack are ignored (another version); the
  fields of `_BEFORE_FIELD` that `obj` lacks get their old behaviour. The one place where
  old workdirs are upgraded."""
  config = defaults.get_config()
  for (section, field), value in _BEFORE_FIELD.items():
    if field not in obj.get(section, {}):
      config[section][field] = value

  def fill(node, values):
    for key, value in values.items():
      if key not in node:
        continue
      if isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
        fill(node[key], value)
      else:
        node[key] = _tuples(value)

  fill(config, obj)
  return config


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = _tuples(v) if isinstance(v, list) else v
  return out


def check_agrees(given, trained, where):
  """A one-line error naming the first model / sid field (or data.max_history_len) on which
  `given` differs from the `trained` config."""
  a, b = _flat(given.to_dict()), _flat(trained.to_dict())
  for key in sorted(set(a) | set(b)):
    if key in _FREE or not (key.startswith(("model.", "sid.")) or key == "data.max_history_len"):
      continue
    if a.get(key) != b.get(key):
      raise WorkdirError(f"--config disagrees with {where}: {key}={a.get(key)!r} given, "
                         f"{b.get(key)!r} trained")


def load_config(workdir, config=None):
  """The config to use with `workdir`: its config.json (checked against `config` when both
  exist; `config` then wins for the fields that may differ, e.g. decode), or `config` for a
  workdir without one."""
  path = paths.join(workdir, CONFIG)
  if not paths.isdir(workdir):
    raise WorkdirError(f"workdir {workdir} does not exist; pass the --workdir a training "
                       "run wrote")
  if not paths.exists(path):
    if config is None:
      raise WorkdirError(f"{workdir} has no {CONFIG} (trained before workdirs kept their "
                         "config); pass the --config=... it was trained with")
    return config
  trained = config_from_dict(paths.read_json(path))
  if config is None:
    return trained
  check_agrees(config, trained, path)
  return config


def load_data(workdir, config):
  """The workdir's prepared data (None for a workdir without data/)."""
  folder = paths.join(workdir, DATA)
  if not paths.exists(paths.join(folder, "meta.json")):
    return None
  return data_lib.load_prepared(folder, int(config.data.max_history_len))
