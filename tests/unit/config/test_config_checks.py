"""Config checks: values that cannot work fail before any work with a one-line ConfigError."""

import pytest

from support.runs import tiny_run_config


def test_impossible_values_are_config_errors(run_cache, run_data):
  from diffgrm_jax import config_checks
  from diffgrm_jax import experiment
  from diffgrm_jax.runtime.cli import ConfigError
  cases = [
      (dict(**{"decode.test_beam": 5}), r"decode\.test_beam=5 is smaller than decode\.top_k=10"),
      (dict(**{"decode.step_beams": (10, 10, 10, 4)}),
       r"decode\.step_beams\[-1\]=4 is smaller than decode\.top_k=10"),
      (dict(**{"model.d_model": 30, "model.n_heads": 4}),
       r"model\.d_model=30 is not divisible by model\.n_heads=4"),
  ]
  for changes, pattern in cases:
    with pytest.raises(ConfigError, match=pattern):
      config_checks.check_config(tiny_run_config(run_cache, **changes))
  # The SID table of `data` has 4 digits of 8 codes.
  for changes in ({"sid.codebook_size": 16}, {"sid.n_digit": 3, "masking.augment_factor": 3,
                                             "decode.step_beams": (10,) * 3}):
    with pytest.raises(ConfigError, match=r"sid\.n_digit=\d, sid\.codebook_size=\d+ disagree "
                                          r"with the SID table \(4 digits of 8 codes\)"):
      experiment.Experiment(tiny_run_config(run_cache, **changes), run_data)
  with pytest.raises(ConfigError, match=r"train\.batch_size=36 is not divisible by the 8 "
                                        r"data-parallel devices \(1 processes\)"):
    config_checks.check_against_devices(tiny_run_config(run_cache, **{"train.batch_size": 36}), 8)
