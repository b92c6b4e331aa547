"""Legality structure against catalogue size: table memory, build time and decode users/s.

Synthetic catalogues of 4-digit SIDs over 256 codes (first digit skewed as in real
SIDs, 10% of items sharing another item's SID), confidence search with a small model
and random weights. The sparse tables (legality.py, what decoding uses) run against
the dense bitset they replaced wherever the dense one stays under --dense_max_gb;
the two alternate in rounds in one process, and their masks are checked equal.

  python benchmarks/bench_catalogue.py                       # 20k, 200k, 2M items
  python benchmarks/bench_catalogue.py --sizes=20000 --rounds=1
"""

import time
from typing import NamedTuple

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import meta

from diffgrm_jax.decoding import decoders
from diffgrm_jax.decoding import settings as decoding
from diffgrm_jax.model.diffgrm import DiffGRM
from diffgrm_jax.sid import catalogue as catalogue_lib
from diffgrm_jax.sid import legality
from synthetic import synthetic_sids  # benchmarks/synthetic.py

flags.DEFINE_string("sizes", "20000,200000,2000000", "Comma-separated catalogue sizes (items).")
flags.DEFINE_integer("users", 256, "Users decoded per round.")
flags.DEFINE_integer("batch", 64, "Users per decode batch.")
flags.DEFINE_integer("beam", 32, "Confidence beam width.")
flags.DEFINE_integer("history", 8, "History length of every user.")
flags.DEFINE_integer("rounds", 2, "Timed rounds per structure (interleaved).")
flags.DEFINE_float("dense_max_gb", 1.0,
                   "Build the dense baseline only when its estimated size is below this.")
FLAGS = flags.FLAGS

N_DIGIT, CODEBOOK = 4, 256


class DenseTables(NamedTuple):
  keys: jax.Array
  bitsets: jax.Array


def _legal_mask(tables, codes, known, n_digit, codebook_size):
  if isinstance(tables, DenseTables):
    return legality.dense_legal_mask(tables.keys, tables.bitsets, codes, known, n_digit,
                                     codebook_size)
  return legality.legal_mask(tables, codes, known, n_digit, codebook_size)


def _nbytes(tables):
  return sum(x.nbytes for x in tables)


def main(argv):
  del argv
  a = FLAGS
  # Dispatch on the tables' type, so the unchanged decoder can run either structure.
  catalogue_lib.legal_mask = _legal_mask

  model = DiffGRM(n_digit=N_DIGIT, codebook_size=CODEBOOK, d_model=128, n_heads=4,
                  n_enc_layers=1, n_dec_layers=2, n_inner=512, dropout=0.0)
  rng = np.random.default_rng(0)
  hist = jnp.asarray(rng.integers(0, CODEBOOK, (a.batch, a.history, N_DIGIT)), jnp.int32)
  mask = jnp.ones((a.batch, a.history), bool)
  variables = meta.unbox(jax.jit(model.init)(
      jax.random.PRNGKey(0), hist[:1], mask[:1], jnp.zeros((1, 1, N_DIGIT), jnp.int32),
      jnp.zeros((1, 1, N_DIGIT), bool)))
  # Build everything first, then time all (size, structure) pairs interleaved in rounds:
  # this machine's speed drifts between minutes, so only one window compares sizes.
  cases, info = {}, {}
  for n_items in [int(s) for s in a.sizes.split(",")]:
    sids = synthetic_sids(np.random.default_rng(n_items), n_items)
    t0 = time.perf_counter()
    cat = catalogue_lib.Catalogue.from_sids(sids, CODEBOOK)
    sparse = cat.tables()
    cases[(n_items, "sparse")] = (sparse, time.perf_counter() - t0)  # the whole Catalogue
    uniq = np.unique(sids[1:], axis=0)
    dense_gb = len(cat.keys) * (4 + N_DIGIT * CODEBOOK // 8) / 1e9
    if dense_gb < a.dense_max_gb:
      t0 = time.perf_counter()
      dense = DenseTables(*map(jnp.asarray, legality.build_dense(uniq, CODEBOOK)))
      cases[(n_items, "dense")] = (dense, time.perf_counter() - t0)
    info[n_items] = dict(sids=len(uniq), keys=len(cat.keys), dense_gb=dense_gb, catalogue=cat)
    print(f"{n_items:,} items built", flush=True)
  fns, outs = {}, {}
  for (n_items, name), (tables, _) in cases.items():  # compile, and check both decode alike
    dec = decoders.make_decoder(model, info[n_items]["catalogue"], decoding.SearchSettings("confidence", (a.beam,) * 4))
    fns[n_items] = fns.get(n_items) or decoders.jit_decoder(dec)
    outs[(n_items, name)] = jax.tree.map(np.asarray, fns[n_items](variables, tables, hist, mask))
    if (n_items, "sparse") in outs and name == "dense":
      for x, y in zip(outs[(n_items, "sparse")], outs[(n_items, "dense")]):
        np.testing.assert_array_equal(x, y)
  times = {k: [] for k in cases}
  for rnd in range(a.rounds):  # alternate the order, so a drift within a round cancels
    for (n_items, name), (tables, _) in list(cases.items())[::1 if rnd % 2 == 0 else -1]:
      t0 = time.perf_counter()
      for _ in range(a.users // a.batch):
        out = fns[n_items](variables, tables, hist, mask)
      jax.block_until_ready(out)
      times[(n_items, name)].append(time.perf_counter() - t0)
  rows = []
  for n_items, d in info.items():
    for name in ("sparse", "dense"):
      if (n_items, name) in cases:
        tables, build_s = cases[(n_items, name)]
        mib, users_s = _nbytes(tables) / 2 ** 20, a.users // a.batch * a.batch / np.median(
            times[(n_items, name)])
      else:
        mib, build_s, users_s = d["dense_gb"] * 1e9 / 2 ** 20, float("nan"), float("nan")
      rows.append(dict(items=n_items, sids=d["sids"], keys=d["keys"], structure=name, mib=mib,
                       build_s=build_s, users_s=users_s))

  print(f"\nconfidence beam {a.beam}, d_model 128, 1+2 layers, batch {a.batch}, history "
        f"{a.history}, {a.users} users x {a.rounds} rounds (median); dense rows without a "
        "speed were not built (size estimated)")
  print("| items | unique SIDs | keys | structure | table MiB | build s | users/s |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['items']:,} | {r['sids']:,} | {r['keys']:,} | {r['structure']} | "
          f"{r['mib']:.1f} | {r['build_s']:.1f} | {r['users_s']:.1f} |")
  base = {r["structure"]: r["users_s"] for r in rows if r["items"] == rows[0]["items"]}
  for r in rows:
    if r["structure"] == "sparse":
      print(f"sparse users/s at {r['items']:,} items / at {rows[0]['items']:,}: "
            f"{r['users_s'] / base['sparse']:.2f}")


if __name__ == "__main__":
  app.run(main)
