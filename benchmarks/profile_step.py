"""Where the time goes: a profile of the jitted train step and of one decode batch.

Runs a few calls under `jax.profiler`, reads the per-operation events of the trace (on CPU
each compiled operation, fusions included, is one event) and attributes each to the
source operation XLA recorded for it (`op_name` metadata of the optimised HLO, e.g.
`.../dec_0/cross_attn/dot_general`). Prints the top lines: time per call, share.

  python benchmarks/profile_step.py --what=train --buckets=8,50      # Sports recipe, batch 256
  python benchmarks/profile_step.py --what=decode --beams=32,256

Sports-recipe model (d 256, 4 heads, 1+4 layers, n_inner 1024) with random weights and
random inputs: the costs depend on shapes only. Train: guided masking with 4 views,
history bucket as given. Decode: confidence search, 2048 // beam users with 8 history
items, a random 18k-item catalogue.
"""

import collections
import glob
import gzip
import json
import os
import re
import tempfile

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from synthetic import random_sids  # benchmarks/synthetic.py

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/sports.py", "train: recipe whose train step is profiled.", lock_config=False)
flags.DEFINE_enum("what", "train", ["train", "decode"], "Profile the train step or a decode batch.")
flags.DEFINE_string("buckets", "8,50", "train: comma-separated history lengths.")
flags.DEFINE_integer("batch", 256, "train: rows per step.")
flags.DEFINE_string("beams", "32,256", "decode: comma-separated beam widths.")
flags.DEFINE_integer("calls", 3, "Profiled calls per case.")
flags.DEFINE_integer("top", 12, "Lines printed per table.")
FLAGS = flags.FLAGS

N_DIGIT, CODEBOOK = 4, 256
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*?metadata=\{[^}]*op_name=\"([^\"]+)\"")


def op_names(hlo_texts):
  """(HLO module, instruction name) -> op_name of its source operation (shortened), for
  the optimised HLO texts of every program a call runs."""
  out = {}
  for text in hlo_texts:
    module = re.match(r"HloModule ([\w.\-]+)", text).group(1)
    for line in text.splitlines():
      m = _INSTR.match(line)
      if m:
        name = re.sub(r"^jit\([^)]*\)/", "", m.group(2))
        out.setdefault((module, m.group(1)), re.sub(r"jvp\(|transpose\(|\)", "", name))
  return out


def profile(fn, args, n_calls, names):
  """Runs fn(*args) n_calls times under the profiler -> [(us per call, share, op, source)]."""
  jax.block_until_ready(fn(*args))
  folder = tempfile.mkdtemp(prefix="profile_step_")
  jax.profiler.start_trace(folder)
  for _ in range(n_calls):
    jax.block_until_ready(fn(*args))
  jax.profiler.stop_trace()
  trace = json.load(gzip.open(glob.glob(os.path.join(folder, "**", "*.trace.json.gz"),
                                        recursive=True)[0]))
  total = collections.Counter()
  for e in trace["traceEvents"]:
    key = (e.get("args", {}).get("hlo_module"), e.get("name"))
    if e.get("ph") == "X" and key in names:  # compiled operations only
      total[key] += e["dur"]
  all_us = sum(total.values())
  return ([(us / n_calls, us / all_us, op, names[(module, op)])
           for (module, op), us in total.most_common()], all_us / n_calls)


def _summed(rows, label):
  """Sums rows by `label(hlo_op, source_op)` -> [(us, share, label)], largest first."""
  g = collections.Counter()
  for us, _, op, src in rows:
    g[label(op, src)] += us
  tot = sum(g.values())
  return [(us, us / tot, k) for k, us in g.most_common()]


def grouped(rows, depth):
  """Sums rows by the last `depth` path components of the source op (e.g. 'cross_attn/dot_general')."""
  def label(_, src):
    parts = [p for p in src.split("/") if p and not p.startswith(("while", "body", "closed_call",
                                                                   "checkpoint", "remat"))]
    return "/".join(parts[-depth:])
  return _summed(rows, label)


# Kinds of work, by the source op's name; the first match wins.
_CATEGORIES = (
    ("dropout: random bits, mask, scale", ("Dropout", "bernoulli", "uniform")),
    ("matmuls (dot_general)", ("dot_general",)),
    ("GELU (erf)", ("erf",)),
    ("LayerNorm", ("ln_", "final_ln")),
    ("softmax", ("softmax", "exp", "reduce_max")),
    ("transposes", ("transpose",)),
)


def _kind(op, src):
  # A dot or a library matmul fusion is a matmul whatever its source op says (the backward
  # pass's weight-gradient dots are recorded as `.../wi/transpose`).
  if op.startswith(("dot", "ynn_fusion", "xnn_fusion", "onednn")):
    return "matmuls (dot_general)"
  return next((name for name, keys in _CATEGORIES if any(k in src for k in keys)), "other")


def categories(rows):
  """Sums rows by kind of work (`_kind`) -> [(us, share, kind)]."""
  return _summed(rows, _kind)


def _model(dropout):
  from diffgrm_jax.model.diffgrm import DiffGRM
  return DiffGRM(n_digit=N_DIGIT, codebook_size=CODEBOOK, d_model=256, n_heads=4,
                 n_enc_layers=1, n_dec_layers=4, n_inner=1024, dropout=dropout)


def train_setup(batch):
  """(train step, fresh state, batch sharding) of the --config recipe at `batch` rows."""
  from diffgrm_jax.model import factory as model_lib
  from diffgrm_jax.runtime import sharding as shard_lib
  from diffgrm_jax.training import step as step_lib
  config = _CONFIG.value
  config.train.batch_size = batch
  model = model_lib.from_config(config)
  mesh = shard_lib.make_mesh(config)
  tx, schedule = step_lib.make_optimizer(config, 10 ** 6)
  state, shardings = step_lib.init_state(model, tx, config, mesh)
  bs = shard_lib.batch_sharding(config, mesh)
  return step_lib.make_train_step(model, tx, schedule, config, shardings, bs), state, bs


def random_train_batch(rng, batch, bucket):
  """A host batch (numpy) of random histories (lengths 1..bucket) and targets."""
  lens = rng.integers(1, bucket + 1, batch)
  batch_np = {
      "hist_sids": rng.integers(0, CODEBOOK, (batch, bucket, N_DIGIT)).astype(np.int32),
      "hist_mask": np.arange(bucket)[None] < lens[:, None],
      "target_sid": rng.integers(0, CODEBOOK, (batch, N_DIGIT)).astype(np.int32),
      "target_item": np.ones(batch, np.int32), "weight": np.ones(batch, np.float32)}
  return batch_np


def compiled_texts(step, state, batch):
  """{program name: optimised HLO text} of a `TrainStep`'s two programs for these arguments."""
  loss, grads = jax.eval_shape(step.gradients, state.params, state.step, batch)
  return {"gradients": step.gradients.lower(state.params, state.step, batch).compile().as_text(),
          "update": step.update.lower(state, grads, loss).compile().as_text()}


def train_case(bucket, batch):
  from diffgrm_jax.training import step as step_lib
  step, state, bs = train_setup(batch)
  batch_np = random_train_batch(np.random.default_rng(0), batch, bucket)
  b = step_lib.to_global({k: batch_np[k] for k in step_lib.DEVICE_KEYS}, bs)
  hlo = list(compiled_texts(step, state, b).values())
  box = [state]

  def run():  # the state is donated: thread it through
    box[0], m = step(box[0], b)
    return m
  return run, (), hlo


def decode_case(beam):
  from flax.linen import meta
  from diffgrm_jax.sid import catalogue as catalogue_lib
  from diffgrm_jax.decoding import decoders
  from diffgrm_jax.decoding import settings as decoding
  model = _model(0.0)
  rng = np.random.default_rng(0)
  cat = catalogue_lib.Catalogue.from_sids(random_sids(rng), CODEBOOK)
  batch = max(8, 2048 // beam)
  hist = jnp.asarray(rng.integers(0, CODEBOOK, (batch, 8, N_DIGIT)), jnp.int32)
  mask = jnp.ones((batch, 8), bool)
  variables = meta.unbox(jax.jit(model.init)(
      jax.random.PRNGKey(0), hist[:1], mask[:1], jnp.zeros((1, 1, N_DIGIT), jnp.int32),
      jnp.zeros((1, 1, N_DIGIT), bool)))
  dec = decoders.make_decoder(model, cat, decoding.SearchSettings("confidence", (beam,) * 4))
  fn = decoders.jit_decoder(dec)
  args = (variables, dec.tables, hist, mask)
  return fn, args, [fn.lower(*args).compile().as_text()]


def main(argv):
  del argv
  a = FLAGS
  cases = ([("train", int(x)) for x in a.buckets.split(",")] if a.what == "train"
           else [("decode", int(x)) for x in a.beams.split(",")])
  for what, x in cases:
    fn, args, hlo = train_case(x, a.batch) if what == "train" else decode_case(x)
    rows, per_call = profile(fn, args, a.calls, op_names(hlo))
    title = (f"train step, batch {a.batch}, history bucket {x}" if what == "train"
             else f"decode batch, confidence beam {x}, {max(8, 2048 // x)} users")
    print(f"\n## {title}: {per_call / 1e3:.1f} ms of operations per call "
          "(summed over threads)")
    print("| ms/call | share | kind of work |\n|---|---|---|")
    for us, share, k in categories(rows):
      print(f"| {us / 1e3:.1f} | {share:.1%} | {k} |")
    print("| ms/call | share | source op (last 3 path parts) |\n|---|---|---|")
    for us, share, k in grouped(rows, 3)[:a.top]:
      print(f"| {us / 1e3:.1f} | {share:.0%} | {k} |")
    outside = [(us, share, k) for us, share, k in grouped(rows, 3) if "DiffGRM." not in k
               and not any(m in k for m in ("_attn/", "mlp/", "dec_ln", "enc_ln"))]
    print("| ms/call | share | outside the model (last 3 path parts) |\n|---|---|---|")
    for us, share, k in outside[:a.top]:
      print(f"| {us / 1e3:.1f} | {share:.1%} | {k} |")
    print("| ms/call | share | HLO op | source op |\n|---|---|---|---|")
    for us, share, op, src in rows[:a.top]:
      print(f"| {us / 1e3:.1f} | {share:.0%} | {op} | {src[-90:]} |")


if __name__ == "__main__":
  app.run(main)
