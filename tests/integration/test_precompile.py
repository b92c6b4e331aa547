"""Start-up compilation (training/precompile.py): after it, training, validation and the
final test compile none of the programs it compiled again, and the run is the same run.
(The accelerators' shape, one program per step and several steps per call:
test_steps_per_call.py.)"""

import jax
import numpy as np

from support.compile_log import OWNED, compiled_names, split_at_precompile
from support.runs import tiny_run_config
from diffgrm_jax.training import loop


def test_nothing_precompiled_is_compiled_again(run_cache, run_data, tmp_path, caplog,
                                               monkeypatch):
  # The CPU default: gradients and the update, two programs per step.
  config = tiny_run_config(run_cache)
  with split_at_precompile(caplog, monkeypatch) as marks:
    summary = loop.train_and_evaluate(config, str(tmp_path / "pre"), data=run_data,
                                      progress=False)
  # Every bucket's train step and both splits' decoders were compiled at start-up ...
  assert any(j.startswith("gradients") for j in marks["jobs"])
  assert not any("steps per call" in j for j in marks["jobs"])
  assert any(j.startswith("valid decoder") for j in marks["jobs"])
  assert any(j.startswith("test decoder") for j in marks["jobs"])
  # ... and none of them again afterwards (the test could fail: without precompile they
  # are all compiled after start-up).
  assert not [n for n in marks["later"] if n in OWNED], marks["later"]
  assert summary["timing"]["precompile_s"] > 0

  # The same run as without it: precompiling changes when programs compile, not what runs.
  config.train.precompile = False
  caplog.clear()
  with jax.log_compiles(True):
    plain = loop.train_and_evaluate(config, str(tmp_path / "plain"), data=run_data,
                                    progress=False)
  # Without it they compile during the run: what the assertion above would have seen.
  assert {"jit(gradients)", "jit(update)", "jit(apply)"} <= set(compiled_names(caplog.records))
  for split in ("valid", "test"):
    for key, value in plain[split].items():
      np.testing.assert_array_equal(summary[split][key], value)
