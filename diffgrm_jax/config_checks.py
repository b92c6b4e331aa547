"""Config checks run before any work, each failing with a one-line message naming the field,
and the wrapper that turns the project's user-facing errors into that one line on the CLI."""

import functools
import math

from absl import app
from absl import flags

from diffgrm_jax.checkpointing import CheckpointError
from diffgrm_jax.data.errors import DataError
from diffgrm_jax.masking import STRATEGIES
from diffgrm_jax.sharding import ConfigError

# Errors whose message is meant for the user: a CLI prints it, not a traceback.
USER_ERRORS = (ConfigError, DataError, CheckpointError)


def _one_line(text):
  return " ".join(str(text).split())


def _parse_flags(argv):
  """absl's flag parsing, with its errors (and ml_collections' unknown-field errors, which
  absl shows as a traceback) as one line; logs at WARNING unless --verbosity says otherwise."""
  try:
    argv = flags.FLAGS(argv)
    # WARNING and above unless --verbosity is given: absl's default (INFO) lets orbax and
    # jax bury the program's own output and errors under hundreds of lines.
    if flags.FLAGS["verbosity"].using_default_value:
      flags.FLAGS.verbosity = -1
    return argv
  except flags.Error as e:  # e.g. a value of the wrong type
    raise SystemExit(f"error: {_one_line(e)}") from None
  except (AttributeError, KeyError) as e:  # ml_collections: an override naming no field
    inner = e.args[0] if e.args and isinstance(e.args[0], BaseException) else e
    text = inner.args[0] if inner.args and isinstance(inner.args[0], str) else str(inner)
    key = text.splitlines()[0].strip("'\"") if text else ""
    bad = [a.split("=")[0] for a in argv[1:]
           if a.startswith("--config.") and key in a.split("=")[0].split(".")[1:]]
    where = f"{bad[0]}: " if bad else ""
    text = text.replace("\nDid you mean", "; did you mean")
    raise SystemExit(f"error: {where}no such config field {_one_line(text)}") from None


def run_cli(main, *more_errors):
  """`app.run(main)`, but a user-facing error (bad flag, config, data or checkpoint, and
  `more_errors`) ends the program with `error: <message>` on one line of stderr and exit
  code 1 instead of a traceback."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except USER_ERRORS + more_errors as e:
      raise SystemExit(f"error: {_one_line(e)}") from None

  app.run(wrapped, flags_parser=_parse_flags)

DECODE_STRATEGIES = ("confidence", "left_to_right", "random", "release_confidence")


def check_config(config):
  """Checks values that cannot work whatever the data or devices."""
  s, m, k, b, t = config.sid, config.model, config.masking, config.decode, config.train
  if s.n_digit < 1:
    raise ConfigError(f"sid.n_digit={s.n_digit}: must be at least 1")
  if s.codebook_size < 2 or 2 ** int(math.log2(s.codebook_size)) != s.codebook_size:
    raise ConfigError(f"sid.codebook_size={s.codebook_size}: must be a power of two >= 2")
  if m.kind not in ("diffgrm", "autoregressive"):
    raise ConfigError(f"model.kind={m.kind!r}: must be 'diffgrm' or 'autoregressive'")
  if m.d_model % m.n_heads:
    raise ConfigError(f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}")
  if m.dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"model.dtype={m.dtype!r}: must be 'float32' or 'bfloat16'")
  if k.strategy not in STRATEGIES:
    raise ConfigError(f"masking.strategy={k.strategy!r}: must be one of {STRATEGIES}")
  if k.get("guided_pass", "projected") not in ("projected", "release"):
    raise ConfigError(f"masking.guided_pass={k.guided_pass!r}: must be 'projected' or 'release'")
  if k.strategy in ("guided", "sequential", "prefix") and k.augment_factor != s.n_digit:
    raise ConfigError(
        f"masking.augment_factor={k.augment_factor}: the {k.strategy} strategy makes one view "
        f"per digit, so it must equal sid.n_digit={s.n_digit}")
  if k.view_probs and len(k.view_probs) != k.augment_factor:
    raise ConfigError(f"masking.view_probs has {len(k.view_probs)} entries but "
                      f"masking.augment_factor={k.augment_factor}")
  if not 0.0 < k.mask_prob <= 1.0:
    raise ConfigError(f"masking.mask_prob={k.mask_prob}: must be in (0, 1]")
  if k.reduction not in ("pooled", "view_mean"):
    raise ConfigError(f"masking.reduction={k.reduction!r}: must be 'pooled' or 'view_mean'")
  if b.strategy not in DECODE_STRATEGIES:
    raise ConfigError(f"decode.strategy={b.strategy!r}: must be one of {DECODE_STRATEGIES}")
  if m.kind == "autoregressive" and b.strategy != "left_to_right":
    raise ConfigError(f"decode.strategy={b.strategy!r}: the autoregressive model decodes "
                      "left_to_right only")
  for name in ("valid_beam", "test_beam"):
    if b[name] < b.top_k:
      raise ConfigError(f"decode.{name}={b[name]} is smaller than decode.top_k={b.top_k}")
  if b.step_beams and len(b.step_beams) != s.n_digit:
    raise ConfigError(f"decode.step_beams has {len(b.step_beams)} entries, "
                      f"sid.n_digit={s.n_digit}")
  if b.step_beams and b.step_beams[-1] < b.top_k:
    raise ConfigError(f"decode.step_beams[-1]={b.step_beams[-1]} is smaller than "
                      f"decode.top_k={b.top_k}")
  if t.batch_size < 1 or t.epochs < 1:
    raise ConfigError(f"train.batch_size={t.batch_size} and train.epochs={t.epochs} must be >= 1")
  if t.checkpoint_every_epochs < 1:
    raise ConfigError(f"train.checkpoint_every_epochs={t.checkpoint_every_epochs}: must be >= 1")
  if t.time_limit_s < 0:
    raise ConfigError(f"train.time_limit_s={t.time_limit_s}: must be >= 0 (0: no limit)")


def check_against_devices(config, data_parallel, process_count=1):
  """The global batch must split evenly over the data-parallel devices and processes."""
  for name, size in (("train.batch_size", config.train.batch_size),
                     ("decode.batch_size", config.decode.batch_size)):
    if size % data_parallel or size % process_count:
      raise ConfigError(f"{name}={size} is not divisible by the {data_parallel} data-parallel "
                        f"devices ({process_count} processes)")


def check_against_data(config, data):
  """The SID table must have the digits and codebook the model is built for."""
  if data.n_digit != config.sid.n_digit or data.codebook_size != config.sid.codebook_size:
    raise ConfigError(
        f"sid.n_digit={config.sid.n_digit}, sid.codebook_size={config.sid.codebook_size} "
        f"disagree with the SID table ({data.n_digit} digits of {data.codebook_size} codes)")
