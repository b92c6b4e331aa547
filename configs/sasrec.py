"""SASRec at its published recipe (SASRec+SS of the eSASRec benchmark): the item-level yardstick.

  python -m diffgrm_jax.train --config=configs/sasrec.py:beauty --workdir=runs/sasrec_beauty
  python -m diffgrm_jax.train --config=configs/sasrec.py:sports --workdir=runs/sasrec_sports
  python -m diffgrm_jax.train --config=configs/sasrec.py:beauty --workdir=runs/sasrec_full \
      --config.model.sasrec_loss=softmax                  # full softmax instead of sampled
  python -m diffgrm_jax.train --config=configs/sasrec.py:demo --workdir=/tmp/sasrec_demo

The benchmark's hyperparameters for Beauty and Sports: embedding 64, 1 block, 1 head,
dropout 0.2, the last 50 items, sampled softmax over 256 uniform negatives, constant
learning rate 1e-3, up to 200 epochs with patience 50 on validation NDCG@10 (item level).
Where it is silent we take the defaults of the implementation it ran (RecTools' SASRec):
batch 128 users, Adam without weight decay or clipping, Xavier-normal weights
(model/sasrec.py), the item table under dropout too, and the user's own items never
recommended (`decode.exclude_history`; no target of this data repeats a history item).
Every epoch is validated. The same data, splits and metrics as the
DIFF_GRM recipes (configs/beauty.py, configs/sports.py); SIDs are prepared as for them, for
the SID-level columns. `:demo` is the embedded synthetic data, in a minute.
"""

from diffgrm_jax import defaults

DATASETS = {"beauty": "Beauty", "sports": "Sports_and_Outdoors"}


def sasrec_recipe(c):
  """The published SASRec+SS settings on config `c` (returns `c`)."""
  c.model.kind = "sasrec"
  c.model.d_model = 64
  c.model.n_heads = 1
  c.model.n_enc_layers = 1
  c.model.dropout = 0.2
  c.model.attention_dropout = 0.2
  c.model.sasrec_loss = "sampled_softmax"
  c.model.sasrec_negatives = 256
  c.data.max_history_len = 50
  c.optim.schedule = "constant"
  c.optim.lr = 1e-3
  c.optim.weight_decay = 0.0
  c.optim.clip_norm = 0.0
  c.train.batch_size = 128
  # Each step is a few milliseconds: one program for the whole batch.
  c.train.micro_batches = 1
  c.train.epochs = 200
  c.train.eval_start_epoch = 1
  c.train.eval_every_epochs = 1
  c.train.patience = 50
  # The state is ~10 MB; saving it every epoch would cost more than the epoch.
  c.train.checkpoint_every_epochs = 10
  c.decode.batch_size = 1024  # users scored per call at validation and test
  # The benchmark's protocol: the user's own items are not recommended again.
  c.decode.exclude_history = True
  return c


def get_config(arg=None):
  """`configs/sasrec.py:beauty`, `:sports`, or `:demo` (the synthetic data)."""
  c = defaults.get_config()
  if arg in DATASETS:
    c.data.source = "shared"
    c.data.name = DATASETS[arg]
    sasrec_recipe(c)
  elif arg == "demo":
    # The demo's data and SIDs (configs/demo.py), a shorter run.
    c.sid.codebook_size = 16
    c.sid.pca_dim = 32
    c.sid.faiss_threads = 1
    sasrec_recipe(c)
    c.data.max_history_len = 20
    c.data.length_buckets = (8, 20)
    c.train.epochs = 30
    c.train.patience = 10
    c.optim.lr = 3e-3
    c.decode.batch_size = 256
  else:
    raise ValueError(f"configs/sasrec.py takes ':beauty', ':sports' or ':demo', got {arg!r}")
  return c
