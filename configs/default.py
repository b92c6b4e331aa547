"""Every field at its default value (the fields and their comments: diffgrm_jax/defaults.py).

  python -m diffgrm_jax.train --config=configs/default.py --workdir=/tmp/run \
      --config.optim.lr=0.001 --config.masking.strategy=random
"""

from diffgrm_jax import defaults


def get_config(arg=None):
  if arg:
    raise ValueError(f"configs/default.py takes no argument, got {arg!r}")
  return defaults.get_config()
