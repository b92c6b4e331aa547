"""Builds the data cache (sequences, embeddings, SIDs) and prints its statistics.

  python -m diffgrm_jax.prepare --config=configs/sports.py [--config.sid.collision_free=True]

See docs/data.md for what is prepared and where it is cached.
"""

import json

from absl import flags

from diffgrm_jax.data import prepare_data
from diffgrm_jax.runtime import cli


def define_flags():
  """The CLI's flags; defined only when run as a program."""
  cli.define_config_flag("Config file.")
  flags.DEFINE_bool("json", False, "Also print the statistics as JSON.")
  flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  config = flags.FLAGS.config
  data = prepare_data(config, verbose=True)
  print(f"cache key {data.cache_key} under {config.data.cache_dir}")
  if flags.FLAGS.json:
    print(json.dumps(data.stats, indent=1))


if __name__ == "__main__":
  define_flags()
  cli.run_cli(main)
