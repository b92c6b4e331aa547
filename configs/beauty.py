"""Beauty recipe (Amazon 2014 5-core, preprocessed copy in ../shared/data).

  python -m diffgrm_jax.prepare --config=configs/beauty.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import default  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config():
  config = default.get_config()
  # ---------------------------------------------------------------- data
  config.data.source = "shared"
  config.data.name = "Beauty"
  # ---------------------------------------------------------------- embeddings
  config.embedding.source = "auto"
  return config
