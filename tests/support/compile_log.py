"""What JAX compiles during a run, split at the end of start-up compilation
(training/precompile.py): for tests that a precompiled program is not compiled again."""

import contextlib
import logging

import jax

from diffgrm_jax.training import precompile

# Programs precompile owns: the train step's pieces and the beam-search decoder.
OWNED = ("jit(fused)", "jit(gradients)", "jit(update)", "jit(multi)", "jit(apply)")


def compiled_names(records):
  names = []
  for r in records:
    text = r.getMessage()
    if text.startswith("Finished XLA compilation of "):
      names.append(text[len("Finished XLA compilation of "):].split(" in ")[0])
  return names


@contextlib.contextmanager
def split_at_precompile(caplog, monkeypatch):
  """Logs compilations inside the block; yields a dict that gets 'jobs' (the names of what
  start-up compiled) and, after the block, 'later' (what was compiled after it)."""
  marks = {}
  real = precompile.compile_all

  def marked(jobs, threads):
    marks["jobs"] = [name for name, _ in jobs]
    seconds = real(jobs, threads)
    marks["after"] = len(caplog.records)
    return seconds

  monkeypatch.setattr(precompile, "compile_all", marked)
  # JAX logs a compilation even when the persistent cache serves it, so the worker's
  # cache may stay on: what counts is that no compilation is asked for again.
  caplog.set_level(logging.WARNING)
  with jax.log_compiles(True):
    yield marks
  marks["later"] = compiled_names(caplog.records[marks["after"]:])
