"""Config validation before any work: each check fails with a one-line `ConfigError` naming
the field. The rules of a section live in the module that uses it (`model/factory.py`,
`training/masking.py`, `training/step.py`, `decoding/settings.py`); this module
runs them all, and holds the rules of the `sid` and `train` sections and the checks
against the devices and the data."""

import math

from diffgrm_jax.decoding import settings as decode_settings
from diffgrm_jax.model import factory as model_lib
from diffgrm_jax.runtime.cli import ConfigError
from diffgrm_jax.training import masking
from diffgrm_jax.training import sasrec_loss
from diffgrm_jax.training import step as step_lib


def check_config(config):
  """Checks values that cannot work whatever the data or devices."""
  s, t = config.sid, config.train
  if s.n_digit < 1:
    raise ConfigError(f"sid.n_digit={s.n_digit}: must be at least 1")
  if s.codebook_size < 2 or 2 ** int(math.log2(s.codebook_size)) != s.codebook_size:
    raise ConfigError(f"sid.codebook_size={s.codebook_size}: must be a power of two >= 2")
  model_lib.check_config(config)
  if model_lib.scores_items(config):
    sasrec_loss.check_config(config)
  masking.check_config(config)
  step_lib.check_config(config)
  decode_settings.check_config(config)
  if t.batch_size < 1 or t.epochs < 1:
    raise ConfigError(f"train.batch_size={t.batch_size} and train.epochs={t.epochs} must be >= 1")
  if t.checkpoint_every_epochs < 1:
    raise ConfigError(f"train.checkpoint_every_epochs={t.checkpoint_every_epochs}: must be >= 1")
  if t.time_limit_s < 0:
    raise ConfigError(f"train.time_limit_s={t.time_limit_s}: must be >= 0 (0: no limit)")


def check_against_devices(config, data_parallel, process_count=1):
  """The global batch must split evenly over the data-parallel devices and processes."""
  for name, size in (("train.batch_size", config.train.batch_size),
                     ("decode.batch_size", decode_settings.batch_size(config))):
    if size % data_parallel or size % process_count:
      raise ConfigError(f"{name}={size} is not divisible by the {data_parallel} data-parallel "
                        f"devices ({process_count} processes)")
  micro = step_lib.micro_batches(config, data_parallel)
  if micro > 1 and config.train.batch_size % (data_parallel * micro):
    raise ConfigError(f"train.batch_size={config.train.batch_size} is not divisible by "
                      f"train.micro_batches={micro} x {data_parallel} data-parallel devices")


def check_against_data(config, data):
  """The SID table must have the digits and codebook the model is built for."""
  if data.n_digit != config.sid.n_digit or data.codebook_size != config.sid.codebook_size:
    raise ConfigError(
        f"sid.n_digit={config.sid.n_digit}, sid.codebook_size={config.sid.codebook_size} "
        f"disagree with the SID table ({data.n_digit} digits of {data.codebook_size} codes)")
