"""Beauty recipe (Amazon 2014 5-core, preprocessed copy in ../shared/data).

  python -m diffgrm_jax.prepare --config=configs/beauty.py
  python -m diffgrm_jax.train --config=configs/beauty.py --workdir=runs/beauty
  python -m diffgrm_jax.eval --config=configs/beauty.py --workdir=runs/beauty

The paper recipe: the Sports architecture (the defaults) with lr 1e-2 and smoothing 0.2.
`configs/beauty.py:cpu` is the reduced CPU budget of `configs/sports.py:cpu`
(`defaults.cpu_budget`).
"""

from diffgrm_jax import defaults


def get_config(arg=None):
  """`configs/beauty.py` is the paper recipe; `configs/beauty.py:cpu` the reduced CPU budget."""
  if arg not in (None, "", "cpu"):
    raise ValueError(f"configs/beauty.py takes no argument or ':cpu', got {arg!r}")
  config = defaults.for_accelerator(defaults.get_config())
  config.data.source = "shared"
  config.data.name = "Beauty"
  config.optim.lr = 0.01
  config.masking.label_smoothing = 0.2
  if arg == "cpu":
    defaults.cpu_budget(config)
  return config
