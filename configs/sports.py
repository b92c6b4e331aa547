"""Sports_and_Outdoors recipe (Amazon 2014 5-core, preprocessed copy in ../shared/data).

  python -m diffgrm_jax.prepare --config=configs/sports.py
  python -m diffgrm_jax.train --config=configs/sports.py --workdir=runs/sports
  python -m diffgrm_jax.eval --config=configs/sports.py --workdir=runs/sports

Paper recipe (SPEC §4): d_model 256, 4 heads, 1 encoder + 4 decoder layers, batch 1024,
guided masking, confidence decoding (beam 32 validation, 256 test).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import default  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config():
  config = default.get_config()
  # ---------------------------------------------------------------- data
  config.data.source = "shared"
  config.data.name = "Sports_and_Outdoors"
  # ---------------------------------------------------------------- embeddings
  config.embedding.source = "auto"
  return config
