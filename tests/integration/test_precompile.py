"""Start-up compilation (training/precompile.py): after it, training, validation and the
final test compile none of the programs it compiled again, and the run is the same run."""

import logging

import jax
import numpy as np
import pytest

from support.runs import tiny_run_config
from diffgrm_jax.training import loop
from diffgrm_jax.training import precompile

# Programs precompile owns: the train step's pieces and the beam-search decoder.
OWNED = ("jit(fused)", "jit(gradients)", "jit(update)", "jit(multi)", "jit(apply)")


def _compiled_names(records):
  names = []
  for r in records:
    text = r.getMessage()
    if text.startswith("Finished XLA compilation of "):
      names.append(text[len("Finished XLA compilation of "):].split(" in ")[0])
  return names


# The CPU default (gradients + update per step), and the accelerators' shape: one program
# per step and several steps per call (calls of 4, and shorter ones where an epoch or a
# checkpoint interval ends).
VARIANTS = {"two programs": {}, "fused, 4 per call": {"train.step_programs": 1,
                                                       "train.steps_per_call": 4}}


@pytest.mark.parametrize("variant", VARIANTS)
def test_nothing_precompiled_is_compiled_again(variant, run_cache, run_data, tmp_path, caplog,
                                               monkeypatch):
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
  config = tiny_run_config(run_cache, **VARIANTS[variant])
  caplog.set_level(logging.WARNING)
  with jax.log_compiles(True):
    summary = loop.train_and_evaluate(config, str(tmp_path / "pre"), data=run_data,
                                      progress=False)
  later = _compiled_names(caplog.records[marks["after"]:])
  # Every bucket's train step and both splits' decoders were compiled at start-up ...
  assert any(j.startswith("train step") or j.startswith("gradients") for j in marks["jobs"])
  assert any(j.startswith("4 steps per call") for j in marks["jobs"]) == bool(VARIANTS[variant])
  assert any(j.startswith("valid decoder") for j in marks["jobs"])
  assert any(j.startswith("test decoder") for j in marks["jobs"])
  # ... and none of them again afterwards (the test could fail: without precompile they
  # are all compiled after start-up).
  assert not [n for n in later if n in OWNED], later
  assert summary["timing"]["precompile_s"] > 0
  if VARIANTS[variant]:
    return

  # The same run as without it: precompiling changes when programs compile, not what runs.
  config.train.precompile = False
  caplog.clear()
  with jax.log_compiles(True):
    plain = loop.train_and_evaluate(config, str(tmp_path / "plain"), data=run_data,
                                    progress=False)
  # Without it they compile during the run: what the assertion above would have seen.
  assert {"jit(gradients)", "jit(update)", "jit(apply)"} <= set(_compiled_names(caplog.records))
  for split in ("valid", "test"):
    for key, value in plain[split].items():
      np.testing.assert_array_equal(summary[split][key], value)
