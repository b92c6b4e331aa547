"""Demo: the embedded synthetic dataset with a small model, minutes on 2 CPU cores.

  python -m diffgrm_jax.train --config=configs/demo.py --workdir=/tmp/diffgrm_demo
  python -m diffgrm_jax.eval --config=configs/demo.py --workdir=/tmp/diffgrm_demo
"""

from diffgrm_jax import defaults


def get_config(arg=None):
  if arg:
    raise ValueError(f"configs/demo.py takes no argument, got {arg!r}")
  c = defaults.get_config()  # the synthetic source is the default
  # A 600-item catalogue: 4 digits of 16 codes leave room for a unique SID per item.
  c.sid.codebook_size = 16
  c.sid.pca_dim = 32
  # One faiss thread: identical SIDs on every machine (SIDs depend on the thread count).
  c.sid.faiss_threads = 1
  c.model.d_model = 64
  c.model.n_heads = 2
  c.model.n_inner = 256
  c.model.n_dec_layers = 2
  c.train.batch_size = 256
  c.train.epochs = 20
  c.train.eval_start_epoch = 4
  c.train.eval_every_epochs = 2
  c.train.patience = 5
  c.optim.warmup_steps = 100
  c.decode.valid_beam = 32
  c.decode.test_beam = 64
  return c
