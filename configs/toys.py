"""Toys_and_Games, the paper's recipe: d_model 1024, 8 heads, lr 3e-3, smoothing 0.15.

The shared data has no Toys copy, so this reads the raw Amazon 2014 files
(reviews_Toys_and_Games_5.json.gz, meta_Toys_and_Games.json.gz) from
data_dir/Toys_and_Games, downloading them when missing, and embeds item text with
sentence-transformers (pip install .[text]):

  python -m diffgrm_jax.train --config=configs/toys.py --workdir=runs/toys
"""

from diffgrm_jax import defaults


def get_config(arg=None):
  if arg:
    raise ValueError(f"configs/toys.py takes no argument, got {arg!r}")
  c = defaults.for_accelerator(defaults.get_config())
  c.data.source = "amazon2014"
  c.data.name = "Toys_and_Games"
  c.data.download = True
  c.embedding.source = "sentence_transformers"
  c.model.d_model = 1024
  c.model.n_heads = 8
  c.masking.label_smoothing = 0.15
  c.train.eval_start_epoch = 10
  return c
