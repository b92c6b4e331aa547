"""Command-line plumbing shared by the entry points, the user-facing errors and `check_choice`.

Every command (`python -m diffgrm_jax.<verb>`) parses absl flags with `run_cli`, so a bad
flag, config, data file or checkpoint ends it with one line, `error: <message>`, and exit
code 1 instead of a traceback. The errors meant for the user derive from `UserError`
(`ConfigError` here, `data.errors.DataError`, `checkpointing.CheckpointError`); this module
imports nothing from the package, so every module may raise them.
"""

import functools

from absl import app
from absl import flags
from ml_collections import config_flags


class UserError(Exception):
  """An error whose message is meant for the user: a CLI prints it, not a traceback."""


class ConfigError(UserError, ValueError):
  """A config value that cannot work; the message names the field."""


def check_choice(field, value, choices):
  """A one-line `ConfigError` (a ValueError) unless `value` is one of `choices`: the one
  form of every enumerated field's check, in the config checks and where a value is used."""
  if value not in choices:
    raise ConfigError(f"{field}={value!r}: must be one of {tuple(choices)}")


def one_line(text):
  return " ".join(str(text).split())


def define_config_flag(help_text, default=None):
  """`--config=FILE[:ARG]` with `--config.<field>=<value>` overrides (locked: a typo fails)."""
  return config_flags.DEFINE_config_file("config", default, help_text, lock_config=True)


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
    raise SystemExit(f"error: {one_line(e)}") from None
  except (AttributeError, KeyError) as e:  # ml_collections: an override naming no field
    inner = e.args[0] if e.args and isinstance(e.args[0], BaseException) else e
    text = inner.args[0] if inner.args and isinstance(inner.args[0], str) else str(inner)
    key = text.splitlines()[0].strip("'\"") if text else ""
    bad = [a.split("=")[0] for a in argv[1:]
           if a.startswith("--config.") and key in a.split("=")[0].split(".")[1:]]
    where = f"{bad[0]}: " if bad else ""
    text = text.replace("\nDid you mean", "; did you mean")
    raise SystemExit(f"error: {where}no such config field {one_line(text)}") from None


def run_cli(main, *more_errors):
  """`app.run(main)`, but a user-facing error (bad flag, config, data or checkpoint, and
  `more_errors`) ends the program with `error: <message>` on one line of stderr and exit
  code 1 instead of a traceback. `main` gets no positional arguments beyond the program."""

  @functools.wraps(main)
  def wrapped(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
      return main(argv)
    except (UserError,) + more_errors as e:
      raise SystemExit(f"error: {one_line(e)}") from None

  app.run(wrapped, flags_parser=_parse_flags)
