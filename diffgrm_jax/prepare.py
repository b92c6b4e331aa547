"""Builds the data cache (sequences, embeddings, SIDs) and prints its statistics.

  python -m diffgrm_jax.prepare --config=configs/sports.py [--config.sid.collision_free=True]
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from diffgrm_jax import config_checks
from diffgrm_jax.data import prepare_data

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_JSON = flags.DEFINE_bool("json", False, "Also print the statistics as JSON.")


def main(argv):
  del argv
  data = prepare_data(_CONFIG.value, verbose=True)
  print(f"cache key {data.cache_key} under {_CONFIG.value.data.cache_dir}")
  if _JSON.value:
    print(json.dumps(data.stats, indent=1))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  config_checks.run_cli(main)
