"""Sports_and_Outdoors recipe (Amazon 2014 5-core, preprocessed copy in ../shared/data).

  python -m diffgrm_jax.prepare --config=configs/sports.py
  python -m diffgrm_jax.train --config=configs/sports.py --workdir=runs/sports
  python -m diffgrm_jax.eval --config=configs/sports.py --workdir=runs/sports

The paper recipe is the defaults (docs/configuration.md): d_model 256, 4 heads, 1 encoder +
4 decoder layers, batch 1024, lr 3e-3, smoothing 0.1, guided masking, confidence decoding
(beam 32 validation, 256 test). `configs/sports.py:cpu` is a reduced budget for a CPU.
"""

from diffgrm_jax import defaults


def get_config(arg=None):
  """`configs/sports.py` is the paper recipe; `configs/sports.py:cpu` the reduced CPU budget."""
  config = defaults.for_accelerator(defaults.get_config())
  config.data.source = "shared"
  config.data.name = "Sports_and_Outdoors"
  if arg == "cpu":
    defaults.cpu_budget(config)  # d 128, 2 decoder layers, batch 256, 2 epochs, beam 32
  elif arg:
    raise ValueError(f"configs/sports.py takes no argument or ':cpu', got {arg!r}")
  return config
