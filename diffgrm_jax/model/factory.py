"""The model a config describes: `from_config`, and the `model` section's checks.

The config's `model` section passes whole to the module (every field the module has);
the digits and codebook come from `sid`, the history length from `data`. A config that
asks for one of the released code's behaviours (`model.mask_cross_attention=False`,
`masking.guided_pass='release'`) gets the variant of `release/model.py`. SASRec
(`model.kind='sasrec'`) ranks item ids, so it is built for the data's item count.
"""

import dataclasses

import jax.numpy as jnp

from diffgrm_jax.model.diffgrm import Autoregressive
from diffgrm_jax.model.diffgrm import DiffGRM
from diffgrm_jax.model.sasrec import INITS as SASREC_INITS
from diffgrm_jax.model.sasrec import SASRec
from diffgrm_jax.release import model as release_model
from diffgrm_jax.runtime.cli import ConfigError
from diffgrm_jax.runtime.cli import check_choice

KINDS = {"diffgrm": DiffGRM, "autoregressive": Autoregressive, "sasrec": SASRec}
# Kinds that score item ids (the others write semantic IDs and decode them with a search).
ITEM_KINDS = ("sasrec",)
RELEASE_KINDS = {"diffgrm": release_model.ReleaseDiffGRM,
                 "autoregressive": release_model.ReleaseAutoregressive}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def model_class(config):
  """The module class of the config: its kind, in the release variant when asked for."""
  m = config.model
  if m.kind in ITEM_KINDS:
    return KINDS[m.kind]
  release = not m.mask_cross_attention or config.masking.guided_pass == "release"
  return (RELEASE_KINDS if release else KINDS)[m.kind]


def scores_items(config):
  """Whether the config's model ranks item ids directly (SASRec) instead of writing SIDs."""
  return config.model.kind in ITEM_KINDS


def from_config(config, dtype=None, n_items=None):
  """Builds the module from a config's `model` section (whole), `sid` and `data`;
  `n_items` (the data's item count) is needed by the kinds that score item ids."""
  cls = model_class(config)
  fields = {f.name for f in dataclasses.fields(cls)}
  kwargs = {k: v for k, v in config.model.items() if k in fields}
  kwargs["dtype"] = DTYPES[config.model.dtype] if dtype is None else dtype
  if "project_guided_pass" in fields:
    kwargs["project_guided_pass"] = config.masking.guided_pass == "projected"
  given = {"n_digit": config.sid.n_digit, "codebook_size": config.sid.codebook_size,
           "max_history_len": config.data.max_history_len, "n_items": n_items}
  if "n_items" in fields and n_items is None:
    raise ValueError(f"model.kind={config.model.kind!r} needs the data's item count (n_items)")
  return cls(**{k: v for k, v in given.items() if k in fields}, **kwargs)


def check_config(config):
  """The `model` section's values that cannot work (one-line `ConfigError` naming the field)."""
  m = config.model
  check_choice("model.kind", m.kind, KINDS)
  if m.d_model % m.n_heads:
    raise ConfigError(f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}")
  check_choice("model.dtype", m.dtype, DTYPES)
  check_choice("model.sasrec_init", m.sasrec_init, SASREC_INITS)
