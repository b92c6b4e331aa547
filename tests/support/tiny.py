"""The tiny model the unit tests share (`tiny_model`), random batches, and seeded train steps."""

import copy
import json

import numpy as np

from diffgrm_jax.model import factory as model_lib
from diffgrm_jax.release import model as release_model
from diffgrm_jax.runtime import sharding as shard_lib
from diffgrm_jax.training import step as step_lib

# The tiny model's sizes: 4 digits of 16 codes, d 32, 2 heads, 1 + 2 blocks.
TINY_SIZES = dict(n_digit=4, codebook_size=16, d_model=32, n_heads=2, n_enc_layers=1,
                  n_dec_layers=2, n_inner=64, dropout=0.0, max_history_len=12)


def tiny_model(kind="diffgrm", mask_cross_attention=True, project_guided_pass=True, **sizes):
  """The tiny model (`TINY_SIZES`, changed by `sizes`) of `kind`; the release variant when
  `mask_cross_attention` or `project_guided_pass` is False."""
  kw = dict(TINY_SIZES, **sizes)
  if mask_cross_attention and project_guided_pass:
    return model_lib.KINDS[kind](**kw)
  if kind == "diffgrm":
    return release_model.ReleaseDiffGRM(mask_cross_attention=mask_cross_attention,
                                        project_guided_pass=project_guided_pass, **kw)
  return release_model.ReleaseAutoregressive(mask_cross_attention=mask_cross_attention, **kw)


def random_batch(rng, batch_size=16, length=8, n_digit=4, codebook=16):
  lengths = rng.integers(1, length + 1, size=(batch_size, 1))
  return {
      "hist_sids": rng.integers(0, codebook, (batch_size, length, n_digit)).astype(np.int32),
      "hist_mask": np.arange(length)[None] < lengths,
      "target_sid": rng.integers(0, codebook, (batch_size, n_digit)).astype(np.int32),
      "target_item": np.zeros(batch_size, np.int32),
      "weight": np.ones(batch_size, np.float32),
  }


# Jitted train steps by (config, mesh): several tests run the same tiny config, and a step
# compiles once instead of once per call.
_STEPS = {}


def train_random_steps(config, mesh, n_steps=3, process_index=0, process_count=1):
  """`n_steps` train steps on seeded random global batches; returns (losses, final state).

  With several processes each feeds its contiguous slice of every global batch, so any
  mesh or process count sees the same global data.
  """
  key = (json.dumps(config.to_dict(), sort_keys=True, default=str), mesh.axis_names,
         tuple(d.id for d in mesh.devices.flat), mesh.devices.shape)
  if key in _STEPS:
    model, tx, bs, step = _STEPS[key]
    state, _ = step_lib.init_state(model, tx, config, mesh)  # fresh: the step donates it
  else:
    config = copy.deepcopy(config)  # the cached step must not see a caller's later edits
    model = model_lib.from_config(config)
    tx, schedule = step_lib.make_optimizer(config, 10)
    state, shardings = step_lib.init_state(model, tx, config, mesh)
    bs = shard_lib.batch_sharding(config, mesh)
    step = step_lib.make_train_step(model, tx, schedule, config, shardings, bs)
    _STEPS[key] = (model, tx, bs, step)
  rng = np.random.default_rng(0)
  per = config.train.batch_size // process_count
  mine = slice(process_index * per, (process_index + 1) * per)
  losses = []
  for _ in range(n_steps):
    batch = random_batch(rng, batch_size=config.train.batch_size)
    state, m = step(state, step_lib.to_global({k: v[mine] for k, v in batch.items()}, bs))
    losses.append(float(m["loss"]))
  return losses, state
