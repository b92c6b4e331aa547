"""The one builder of small test configs (`make_config`) and the named sizes the tests use.

`make_config(base, **changes)` starts from a config file in configs/ (or the defaults) and
applies dotted-field changes, e.g. `make_config("demo.py", **TINY_RUN)`:
  TINY_MODEL  a small model on the default data settings (unit tests of steps/sharding);
  TINY_RUN    a complete run of configs/demo.py in seconds: 100 users, 60 items, codebook 8,
              d_model 16, 9 steps per epoch, 2 epochs, validation after each.
"""

import importlib.util
import os

from diffgrm_jax import defaults

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY_MODEL = {
    "sid.codebook_size": 16, "model.d_model": 32, "model.n_heads": 2, "model.n_inner": 64,
    "model.n_dec_layers": 2, "data.max_history_len": 12, "optim.warmup_steps": 2,
    "train.batch_size": 16,
}

TINY_RUN = {
    "data.synthetic.n_users": 100, "data.synthetic.n_items": 60, "data.synthetic.n_groups": 6,
    "data.synthetic.emb_dim": 16, "data.synthetic.max_len": 8, "data.max_history_len": 8,
    "data.length_buckets": (8,), "sid.codebook_size": 8, "sid.pca_dim": 8,
    "model.d_model": 16, "model.n_heads": 1, "model.n_inner": 32, "model.n_dec_layers": 1,
    "train.batch_size": 32, "train.epochs": 2, "train.eval_start_epoch": 1,
    "train.eval_every_epochs": 1, "train.checkpoint_every_steps": 4, "optim.warmup_steps": 2,
    "decode.valid_beam": 10, "decode.test_beam": 10,
    "decode.batch_size": 32,
}


def load_config_file(name, arg=None):
  """`get_config(arg)` of configs/<name> (loaded from its path, as --config=... does)."""
  path = name if os.path.isabs(name) else os.path.join(ROOT, "configs", name)
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def make_config(base=None, **changes):
  """A config from configs/<base> (default: the defaults) with dotted-field `changes`."""
  c = defaults.get_config() if base is None else load_config_file(base)
  for key, value in changes.items():
    *path, last = key.split(".")
    node = c
    for p in path:
      node = node[p]
    node[last] = value
  return c


def tiny_config(**changes):
  return make_config(**dict(TINY_MODEL, **changes))
