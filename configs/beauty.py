"""Beauty recipe (Amazon 2014 5-core, preprocessed copy in ../shared/data).

  python -m diffgrm_jax.prepare --config=configs/beauty.py
  python -m diffgrm_jax.train --config=configs/beauty.py --workdir=runs/beauty
  python -m diffgrm_jax.eval --config=configs/beauty.py --workdir=runs/beauty

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
  config.data.name = "Beauty"
  # ---------------------------------------------------------------- embeddings
  config.embedding.source = "auto"
  # ---------------------------------------------------------------- recipe
  config.optim.lr = 0.01
  config.masking.label_smoothing = 0.2
  # An epoch takes seconds on a GPU: save the latest checkpoint every 5 epochs, not each.
  config.train.checkpoint_every_epochs = 5
  return config
