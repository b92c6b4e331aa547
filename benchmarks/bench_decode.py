"""Decoding throughput (users/s) and peak memory per strategy and beam width.

Sports-recipe model size with random weights, a random 18,357-item catalogue with
realistic collisions, and histories of a realistic length mix padded to buckets
8/16/32/50. Each (strategy, beam) runs in its own process so peak RSS is its own.

  python benchmarks/bench_decode.py                  # full table
  python benchmarks/bench_decode.py --beams=32 --strategies=confidence --users=128
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

import peak_memory  # benchmarks/peak_memory.py
from synthetic import history_lengths, random_sids  # benchmarks/synthetic.py

flags.DEFINE_string("strategies", "confidence,left_to_right,random", "Comma-separated strategies.")
flags.DEFINE_string("beams", "32,256", "Comma-separated beam widths.")
flags.DEFINE_integer("users", 0, "Users per run (0: 32768 // beam).")
flags.DEFINE_integer("batch", 0, "Users per batch (0: 2048 // beam, at least 8).")
flags.DEFINE_bool("one", False, "Internal: run one (strategy, beam) and print it as JSON.")
FLAGS = flags.FLAGS

N_ITEMS, N_DIGIT, CODEBOOK = 18357, 4, 256
BUCKETS = (8, 16, 32, 50)


def run_one(strategy, beam, n_users, batch):
  import jax
  import jax.numpy as jnp
  from flax.linen import meta

  from diffgrm_jax.sid import catalogue as catalogue_lib
  from diffgrm_jax.decoding import decoders
  from diffgrm_jax.decoding import settings as decoding
  from diffgrm_jax.model.diffgrm import DiffGRM

  rng = np.random.default_rng(0)
  sids = random_sids(rng)
  t0 = time.perf_counter()
  cat = catalogue_lib.Catalogue.from_sids(sids, CODEBOOK)
  build_s = time.perf_counter() - t0
  model = DiffGRM(n_digit=N_DIGIT, codebook_size=CODEBOOK, d_model=256, n_heads=4,
                  n_enc_layers=1, n_dec_layers=4, n_inner=1024, dropout=0.1)
  variables = meta.unbox(model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 8, N_DIGIT), jnp.int32), jnp.ones((1, 8), bool),
      jnp.zeros((1, 1, N_DIGIT), jnp.int32), jnp.zeros((1, 1, N_DIGIT), bool)))
  dec = decoders.make_decoder(model, cat, decoding.SearchSettings(strategy, (beam,) * N_DIGIT))
  fn = decoders.jit_decoder(dec)
  tables = dec.tables

  lens = history_lengths(rng, n_users)
  bucket = np.array(BUCKETS)[np.searchsorted(BUCKETS, lens)]
  batches = []
  for lb in BUCKETS:
    idx = np.flatnonzero(bucket == lb)
    for s in range(0, len(idx), batch):
      rows = idx[s:s + batch]
      hist = rng.integers(0, CODEBOOK, size=(batch, lb, N_DIGIT)).astype(np.int32)
      mask = np.arange(lb)[None] < np.pad(lens[rows], (0, batch - len(rows)))[:, None]
      batches.append((len(rows), jnp.asarray(hist), jnp.asarray(mask)))
  t0 = time.perf_counter()
  for lb in sorted({b[1].shape[1] for b in batches}):  # compile every bucket shape first
    b = next(b for b in batches if b[1].shape[1] == lb)
    jax.block_until_ready(fn(variables, tables, b[1], b[2]))
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _, hist, mask in batches:
    out = fn(variables, tables, hist, mask)
  jax.block_until_ready(out)
  secs = time.perf_counter() - t0
  return dict(strategy=strategy, beam=beam, users=int(n_users), batch=batch,
              users_per_s=n_users / secs, seconds=secs, compile_s=compile_s,
              catalogue_build_s=build_s, n_keys=len(cat.keys),
              table_mib=sum(x.nbytes for x in tables) / 2 ** 20,
              peak_rss_gib=peak_memory.peak_rss_gb())


def main(argv):
  del argv
  a = FLAGS
  if a.one:
    beam = int(a.beams)
    batch = a.batch or max(8, 2048 // beam)
    users = a.users or max(batch * 4, 32768 // beam)
    print(json.dumps(run_one(a.strategies, beam, users, batch)))
    return
  rows = []
  for beam in [int(b) for b in a.beams.split(",")]:
    for strategy in a.strategies.split(","):
      cmd = [sys.executable, __file__, "--one", f"--strategies={strategy}", f"--beams={beam}",
             f"--users={a.users}", f"--batch={a.batch}"]
      out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
      if out.returncode:
        sys.exit(out.stderr)
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
      r = rows[-1]
      print(f"{r['strategy']:>14} beam {r['beam']:>4}: {r['users_per_s']:7.1f} users/s  "
            f"(batch {r['batch']}, {r['users']} users, compile {r['compile_s']:.0f} s)  "
            f"peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)
  r = rows[0]
  print(f"\ncatalogue: {r['n_keys']} keys, {r['table_mib']:.1f} MiB, built in "
        f"{r['catalogue_build_s']:.1f} s")
  print("\n| strategy | beam | users/s | batch | peak RSS (GiB) |\n|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['strategy']} | {r['beam']} | {r['users_per_s']:.1f} | {r['batch']} | "
          f"{r['peak_rss_gib']:.2f} |")


if __name__ == "__main__":
  app.run(main)
