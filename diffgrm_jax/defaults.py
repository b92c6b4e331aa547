"""Default configuration: every field of diffgrm_jax, each with a one-line comment.

The recipes in configs/ (`sports.py`, `beauty.py`, `toys.py`, `demo.py`) start from
`get_config()` here and change only what differs; `configs/default.py` returns it as is.
Any field can be overridden on the command line:

  python -m diffgrm_jax.train --config=configs/default.py --workdir=/tmp/run \
      --config.optim.lr=0.001 --config.masking.strategy=random

docs/configuration.md explains the fields by topic.
"""

import os

import ml_collections

# Model fields that change no parameter (regularisation, compute dtype): a trained model may
# be evaluated, resumed or restored with other values (workdir.py, training/checkpointing.py).
FREE_MODEL_FIELDS = ("dropout", "attention_dropout", "dtype", "sasrec_loss", "sasrec_negatives",
                     "sasrec_negatives_per", "sasrec_init")


def _default_data_dir():
  # ../shared/data beside the checkout (this file is in <checkout>/diffgrm_jax), unless
  # DIFFGRM_DATA points elsewhere.
  here = os.path.dirname(os.path.abspath(__file__))
  return os.environ.get("DIFFGRM_DATA", os.path.join(here, "..", "..", "shared", "data"))


def _default_cache_dir():
  return os.environ.get(
      "DIFFGRM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "diffgrm_jax"))


def get_config():
  """Every field at its default value."""
  c = ml_collections.ConfigDict()
  # Master seed: data shuffling, masking, dropout and init all derive from it.
  c.seed = 42

  # ---------------------------------------------------------------- data
  c.data = d = ml_collections.ConfigDict()
  # Where the data comes from: 'synthetic' (embedded, no files), 'shared' (the
  # preprocessed `user item item ...` format of ../shared/data), 'amazon2014' (raw
  # SNAP reviews_/meta_ files, downloaded or read from data_dir) or 'interactions' (your
  # own user/item/timestamp table: see data.interactions).
  d.source = "synthetic"
  # Dataset / category name, e.g. 'Sports_and_Outdoors', 'Beauty', 'Toys_and_Games'.
  d.name = "synthetic"
  # Root folder holding datasets (a sub-folder per dataset name).
  d.data_dir = _default_data_dir()
  # Cache for processed sequences, embeddings and SID tables (never inside data_dir).
  d.cache_dir = _default_cache_dir()
  # amazon2014 only: download missing raw files (else they must be in data_dir).
  d.download = False
  # Most recent history items kept per example (the paper: 50).
  d.max_history_len = 50
  # Histories are padded to the smallest of these lengths that fits, so a few shapes
  # are compiled; training batches are drawn from one bucket at a time.
  d.length_buckets = (8, 16, 32, 50)
  # grain threads building training batches ahead of the step, and how many batches they
  # may hold; 0 = the backend's default (data/pipeline.py, READ_OPTIONS: few on CPU, where
  # the threads share the cores with the step, more on GPU/TPU). Batches are the same.
  d.read_threads = 0
  d.prefetch = 0
  # Synthetic source only: catalogue and population sizes and the generator's seed.
  d.synthetic = ml_collections.ConfigDict()
  d.synthetic.n_users = 2000
  d.synthetic.n_items = 600
  d.synthetic.n_groups = 24
  d.synthetic.emb_dim = 64
  d.synthetic.min_len = 5
  d.synthetic.max_len = 20
  d.synthetic.seed = 0
  # Interactions source only (diffgrm_jax/data/interactions.py explains each step).
  d.interactions = i = ml_collections.ConfigDict()
  # The interactions file: .csv, .tsv (header row) or .jsonl (one object a line), .gz ok.
  i.path = ""
  # Optional item table (same formats): item id plus text fields, for the item embedding.
  i.items_path = ""
  # File format: 'auto' (from the extension), 'csv', 'tsv' or 'jsonl'.
  i.format = "auto"
  # Column holding the user id.
  i.user_col = "user_id"
  # Column holding the item id.
  i.item_col = "item_id"
  # Column holding the timestamp: a number (any unit) or an ISO 8601 date/time.
  i.time_col = "timestamp"
  # Item table: column holding the item id.
  i.item_id_col = "item_id"
  # Item table: columns fed to the item text (any of title, price, brand, categories, description).
  i.text_cols = ("title", "brand", "categories", "description")
  # Item table, CSV/TSV: separator of several categories in one field ('' = one category).
  i.category_sep = "|"
  # Iterative k-core: drop users and items with fewer than k interactions until none (<= 1: off).
  i.kcore = 5

  # ---------------------------------------------------------------- embeddings
  c.embedding = e = ml_collections.ConfigDict()
  # 'auto' (the source's own vectors when it has them: synthetic's latent vectors,
  # shared's derived/item_emb_*.npy; for model.kind='sasrec' without any, 'random'),
  # 'file' (a .npy aligned with item ids), 'sentence_transformers' (encode the item text
  # with `model`), 'workdir' (the item table of the SASRec run in `workdir`: collaborative
  # SIDs, no text needed), 'text+workdir' (what 'auto' finds and the workdir's table, each
  # normalised, side by side) or 'random' (seeded vectors: SIDs without meaning).
  e.source = "auto"
  # .npy file for source='file'; row r = item id r+1, or r = item id when it has n_items+1 rows.
  e.path = ""
  # sentence-transformers model name or local path (pip install .[text]).
  e.model = "sentence-transformers/sentence-t5-base"
  # Encoding batch size for sentence-transformers.
  e.batch_size = 64
  # source='workdir' / 'text+workdir': a trained SASRec workdir (its best checkpoint's item
  # table; items matched by raw id: data/collaborative.py).
  e.workdir = ""

  # ---------------------------------------------------------------- semantic IDs
  c.sid = s = ml_collections.ConfigDict()
  # Digits per semantic ID.
  s.n_digit = 4
  # Codes per digit.
  s.codebook_size = 256
  # PCA output dimension before OPQ (capped at the embedding dimension).
  s.pca_dim = 256
  # Whiten the PCA output (fewer collisions).
  s.whiten = True
  # faiss thread count: SIDs depend on it, so it is part of the cache key.
  s.faiss_threads = 2
  # Re-assign colliding items so every item has its own SID (item level == SID level).
  s.collision_free = False

  # ---------------------------------------------------------------- model
  c.model = m = ml_collections.ConfigDict()
  # 'diffgrm' (bidirectional masked decoder), 'autoregressive' (causal baseline over SIDs)
  # or 'sasrec' (causal self-attention over item ids, ranking every item: configs/sasrec.py).
  m.kind = "diffgrm"
  # Model width.
  m.d_model = 256
  # Attention heads.
  m.n_heads = 4
  # Encoder blocks.
  m.n_enc_layers = 1
  # Decoder blocks.
  m.n_dec_layers = 4
  # MLP hidden width.
  m.n_inner = 1024
  # Dropout rate (embeddings, attention outputs, MLPs).
  m.dropout = 0.1
  # Output heads tied to the digit's slice of the embedding table (False adds an adapter).
  m.tie_heads = True
  # True: padded history positions get no cross-attention weight. False: the release's
  # behaviour (zeroed encoder rows that still take softmax weight; release/model.py).
  m.mask_cross_attention = True
  # One final LayerNorm shared by encoder and decoder outputs (the release; False: two).
  # Why it is the default: docs/release_parity.md, "Which options are the defaults".
  m.shared_final_ln = True
  # Dropout on attention probabilities (the release's 0.1; 0 turns it off).
  m.attention_dropout = 0.1
  # Compute dtype: 'float32' or 'bfloat16' (parameters stay float32).
  m.dtype = "float32"
  # sasrec only (its blocks are n_enc_layers; d_model, n_heads, dropout and
  # attention_dropout as above): the loss, 'sampled_softmax' (the target against
  # `sasrec_negatives` uniformly drawn items) or 'softmax' (over every item).
  m.sasrec_loss = "sampled_softmax"
  # sasrec only: negatives of the sampled softmax.
  m.sasrec_negatives = 256
  # sasrec only: draw them per 'sequence' (shared by its positions; 7x faster on CPU) or
  # per 'position' (training/sasrec_loss.py).
  m.sasrec_negatives_per = "sequence"
  # sasrec only: every real position also attends to the padding up to data.max_history_len
  # (zero inputs, so the key and value biases), as the reference implementation does with
  # its full-width left padding and no key padding mask (model/sasrec.py). Changes no
  # parameter but changes the scores: a trained model is evaluated with its own value.
  m.sasrec_padding_keys = False
  # sasrec only: the initial draw, 'xavier' (every weight Xavier-normal, biases zero) or
  # 'rectools' (that implementation's: query/key/value as one fused [3D, D] Xavier draw,
  # FFN biases uniform in +-1/sqrt(D); model/sasrec.py). Used at initialisation only.
  m.sasrec_init = "xavier"

  # ---------------------------------------------------------------- masking
  c.masking = k = ml_collections.ConfigDict()
  # 'random' (seed note), 'sequential', 'prefix' (left-to-right views, an ablation) or
  # 'guided' (paper's on-policy noising).
  k.strategy = "guided"
  # Masked views per training row.
  k.augment_factor = 4
  # random: probability that a digit is masked.
  k.mask_prob = 0.5
  # random: per-view probabilities (empty = mask_prob for every view).
  k.view_probs = ()
  # random: force view 0 to be all-masked.
  k.force_all_masked = True
  # Loss: 'pooled' (mean over all masked tokens of the batch: the release) or 'view_mean'
  # (mean within each view, then across views: the paper's formula). Chosen by measurement.
  k.reduction = "pooled"
  # Label smoothing within each digit's codebook.
  k.label_smoothing = 0.1
  # guided: confidence pass 'projected' (cross-attention K/V projected, as in training) or
  # 'release' (skips those projections, as the released code does).
  k.guided_pass = "projected"

  # ---------------------------------------------------------------- optimisation
  c.optim = o = ml_collections.ConfigDict()
  # Peak learning rate.
  o.lr = 0.003
  # 'warmup_cosine' (linear warmup over warmup_steps, then cosine decay to 0 at the last
  # epoch) or 'constant' (lr throughout).
  o.schedule = "warmup_cosine"
  # Linear warmup steps from 0 (capped at the total step count).
  o.warmup_steps = 10000
  # AdamW weight decay (optax's default 1e-4 differs from the release's 0).
  o.weight_decay = 0.0
  # Adam betas and epsilon.
  o.b1 = 0.9
  o.b2 = 0.999
  o.eps = 1e-8
  # Global-norm gradient clipping (0: none).
  o.clip_norm = 1.0

  # ---------------------------------------------------------------- training loop
  c.train = t = ml_collections.ConfigDict()
  # Global batch size (rows before views).
  t.batch_size = 1024
  # Epochs (the cosine schedule spans all of them).
  t.epochs = 200
  # First epoch (1-based) after which validation runs.
  t.eval_start_epoch = 20
  # Validate every this many epochs once started.
  t.eval_every_epochs = 1
  # Early stopping after this many evaluations without improvement.
  t.patience = 15
  # Save the latest checkpoint every this many steps (0: only at epoch ends).
  t.checkpoint_every_steps = 0
  # Save the latest checkpoint at every this many epoch ends (and always at the end and
  # on SIGTERM). A save is a synchronous copy of the state, so the accelerator recipes,
  # whose epochs take seconds, save less often (`for_accelerator`). A new best state is kept
  # in device memory and written just before the next latest save.
  t.checkpoint_every_epochs = 1
  # Write the latest checkpoint in the background (orbax's asynchronous saves): training
  # goes on while a copy of the state is written; the next save, a restore and the end of
  # the run (SIGTERM included) wait for it. False: every save blocks until it is on disk.
  t.async_checkpoints = True
  # Stop training once this many seconds of wall time have passed in this run (0: no
  # limit), then evaluate the best checkpoint as usual; rerunning resumes. For jobs of
  # fixed length (preemptible VMs, batch queues).
  t.time_limit_s = 0.0
  # Write loss/lr/grad-norm to TensorBoard every this many steps.
  t.log_every_steps = 20
  # Stop after this many steps in total (0: no limit; for smoke tests and benchmarks).
  t.max_steps = 0
  # PRNG implementation of the step's random draws (dropout, masks): 'threefry2x32'
  # (JAX's default), 'rbg' or 'unsafe_rbg' (XLA's RngBitGenerator: cheaper random bits on
  # accelerators). Other draws, so a different but equally valid run. Parameter
  # initialisation always uses the default.
  t.prng_impl = "threefry2x32"
  # Split each step's batch into this many slices, run one after the other, with their
  # gradients summed: the same loss and gradient with about 1/micro_batches of the step's
  # activation memory. Slices draw their own dropout and masks, so a value above 1 is a
  # different but equally valid run. 0: automatic, slices of 32 or more rows per device on
  # CPU (faster there, and less memory), the whole batch on GPU/TPU.
  t.micro_batches = 0
  # Compute the decoder's last block at the masked digits only (10 of 16 positions with
  # guided masking; strategies with a fixed number of masked digits). The same loss and
  # gradient without dropout and the same in expectation with it, and faster (measures:
  # benchmarks/results/speed.md, "Training: the decoder's last block at the masked digits
  # only").
  t.masked_last_block = True
  # Keep compiled XLA programs in <data.cache_dir>/xla, so that a second run, eval and
  # recommend load what was compiled before (diffgrm_jax/runtime/compile_cache.py). False:
  # compile every time. A folder set by JAX_COMPILATION_CACHE_DIR is used as it is.
  t.compilation_cache = True
  # Compiled programs per train step: 2 (gradients, then the optimiser update: the update
  # is compiled once for every history bucket, which saves compile memory), 1 (both in one
  # program, one dispatch per step), or 0: 2 on CPU, 1 on GPU/TPU.
  t.step_programs = 0
  # Train steps per jitted call (a lax.scan over that many batches, one branch per length
  # bucket): fewer dispatches and host round trips, for accelerators whose steps take
  # milliseconds. The same batches, order and random numbers as 1; calls end at epoch
  # ends and checkpoint steps, and NaN checks, logging and SIGTERM act between calls.
  t.steps_per_call = 1
  # Compile every program the run calls (train steps per bucket, validation and test
  # decoders) at start-up, `compile_threads` at a time (0: 2 on CPU, up to 16 on GPU/TPU
  # hosts), instead of one after another on first use (training/precompile.py).
  t.precompile = True
  t.compile_threads = 0

  # ---------------------------------------------------------------- decoding
  c.decode = b = ml_collections.ConfigDict()
  # 'confidence' (paper's CPD), 'left_to_right' (seed note), 'random' or
  # 'release_confidence' (the released code's search, docs/release_parity.md).
  b.strategy = "confidence"
  # Beam width for validation during training.
  b.valid_beam = 32
  # Beam width for test / eval.
  b.test_beam = 256
  # left_to_right / random: explicit beam width per fill step for BOTH splits (e.g. the
  # seed note's 256,512,512,512). Empty: every strategy and model kind uses the split's
  # beam above at every step, so DIFF_GRM and the autoregressive baseline search alike.
  b.step_beams = ()
  # confidence: fill the last digit greedily per beam (the released code) instead of
  # keeping the global top-B to the end.
  b.greedy_last = False
  # Normalise each fill step's log-probabilities over the legal codes only (codes that keep
  # the partial SID a catalogue item's) instead of all C codes (the released code).
  b.renormalize_legal = False
  # random: seed of the one digit order drawn for the run.
  b.order_seed = 42
  # SIDs ranked per user at SID level (metrics use K = 5, 10).
  b.top_k = 10
  # Item ranking across decoded SIDs: 'score' (log P(SID) + log P(item | SID)) or 'expand'
  # (each SID's whole collision group in turn); the other is also reported as item_<name>/.
  b.item_ranking = "score"
  # Decoded SIDs whose items compete in the item ranking (0: every final beam; >= top_k).
  b.item_sids = 0
  # Additive smoothing of P(item | SID), estimated from training-target counts in the group.
  b.item_prior_alpha = 1.0
  # Users per decoding batch (0: 256 on CPU, 1024 on GPU/TPU).
  b.batch_size = 0
  # Never rank an item of the user's own history (the usual protocol of SASRec
  # benchmarks; in the Amazon data no target repeats a history item). model.kind='sasrec'
  # only.
  b.exclude_history = False

  # ---------------------------------------------------------------- parallelism
  # See diffgrm_jax/runtime/sharding.py for what each axis does and launch/README.md for runs.
  c.mesh = ml_collections.ConfigDict()
  # Axis sizes in the order of `axes`; one may be -1 (the rest); sizes left off are 1.
  c.mesh.shape = (-1, 1, 1)
  # Mesh axis names: data (replicated params), fsdp (sharded params), tensor (split MLP/heads).
  c.mesh.axes = ("data", "fsdp", "tensor")
  # On CPU, XLA devices to split the machine into (diffgrm_jax/runtime/cpu_devices.py): 1 =
  # the whole machine as one device; 0 = one per usable core (as many as divide the batch
  # sizes), so the cores share the batch as data-parallel devices (opt-in: not faster in
  # every measurement, and more memory).
  # Ignored elsewhere, and where XLA_FLAGS sets --xla_force_host_platform_device_count.
  c.mesh.cpu_devices = 1
  # Logical axis -> mesh axis, tuple of axes, or None (replicated); 'batch' names the data-like axes.
  c.mesh.rules = (
      ("batch", ("data", "fsdp")),
      ("vocab", None),
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("kv", None),
      ("pos", None),
  )
  return c


def for_accelerator(c):
  """Changes for recipes meant for a GPU or TPU (returns `c`)."""
  # An epoch takes seconds on an accelerator: save the latest checkpoint every 5 epochs, not each.
  c.train.checkpoint_every_epochs = 5
  return c


def cpu_budget(c):
  """The reduced budget of a recipe's `:cpu` variant, for a 2-core CPU (returns `c`).

  A half-width model (d 128, n_inner 512) with 2 decoder layers, batch 256, 2 epochs, no
  validation during training (the last state is evaluated: no model selection), and beam 32
  for every strategy at validation and test. A Sports run takes about 25 minutes.
  """
  c.model.d_model = 128
  c.model.n_inner = 512
  c.model.n_dec_layers = 2
  c.train.batch_size = 256
  c.train.epochs = 2
  c.train.checkpoint_every_epochs = 1
  c.train.eval_start_epoch = 1000
  c.optim.warmup_steps = 500
  c.decode.valid_beam = 32
  c.decode.test_beam = 32
  return c
