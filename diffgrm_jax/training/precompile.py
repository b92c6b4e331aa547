"""Ahead-of-time compilation at start-up: every program a run calls, compiled together.

Without it, each program compiles on first use, one after another: the train step of each
length bucket as its first batch comes, the validation decoders at the first validation,
the test decoders at the end. `train.precompile` (on by default) lowers and compiles them
all before the first step, in `train.compile_threads` threads (XLA compiles programs
independently, and on a GPU/TPU host the cores are otherwise idle). JAX keeps each
executable in memory, so the run's own calls with the same shapes and shardings reuse it
(`tests/integration/test_precompile.py` checks that training compiles nothing more); with
the persistent cache on (runtime/compile_cache.py), the next process loads them from disk.

What is compiled: the train step per bucket that has training rows (the fused step, or
gradients per bucket plus the update once), the `train.steps_per_call` call at every
length the run's calls take (shorter ones end at epoch ends and checkpoint steps), and for
the kinds that decode SIDs, the validation and test decoders per bucket of each split.
SASRec's scoring programs are small and compile on first use.
"""

import concurrent.futures
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from diffgrm_jax.data import pipeline
from diffgrm_jax.evaluation import evaluate as evaluation
from diffgrm_jax.runtime import sharding as shard_lib
from diffgrm_jax.training import step as step_lib

# `train.compile_threads = 0`: on CPU two (compiling is where training's host memory peaks,
# and the step shares those cores anyway); on GPU/TPU hosts up to 16.
AUTO_THREADS = {"cpu": 2, "accelerator": 16}


def compile_threads(config, platform=None):
  """Threads compiling at once: `train.compile_threads`, or for 0 the backend's default
  (capped at the host's cores)."""
  n = int(config.train.compile_threads)
  if n:
    return n
  platform = platform or jax.default_backend()
  return max(1, min(AUTO_THREADS["cpu" if platform == "cpu" else "accelerator"],
                    os.cpu_count() or 1))


def _spec(shape, dtype, sharding):
  return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


def train_jobs(run, state, call_sizes=()):
  """[(name, thunk)]: the training programs of `run` (a `loop.Run`) for `state`'s shapes;
  `call_sizes`: the step counts of the multi-step calls the run will make (one program
  each)."""
  loader, exp, step = run.loader, run.exp, run.train_step
  keys = step_lib.batch_keys(exp.model)
  examples = loader.example_batches() if hasattr(loader, "example_batches") else {}
  jobs = []
  for width, batch in examples.items():
    # The example batch itself, made global as the loop makes every batch (to_global), so
    # the lowering sees exactly the shapes and shardings the calls will.
    global_batch = step_lib.to_global(batch, exp.batch_sharding, keys)
    if step.fused is not None:
      jobs.append((f"train step, width {width}",
                   lambda b=global_batch: step.fused.lower(state, b).compile()))
    else:
      jobs.append((f"gradients, width {width}",
                   lambda b=global_batch: step.gradients.lower(state.params, state.step,
                                                               b).compile()))
  if examples and step.fused is None:
    # As the gradients program returns it: replicated over the mesh.
    loss = _spec((), jnp.float32, shard_lib.replicated(exp.mesh))
    jobs.append(("update", lambda: step.update.lower(state, state.params, loss).compile()))
  if run.multi_step is not None and examples:
    batch = next(iter(examples.values()))
    for k in call_sizes:
      # Stacked and padded by the loop's own function (loop._dispatch); bucket ids as the
      # host array the call passes.
      batches = step_lib.stack_batches([batch] * k, exp.batch_sharding, keys,
                                       max(loader.edges))
      buckets = np.zeros(k, np.int32)
      jobs.append((f"{k} steps per call",
                   lambda b=batches, i=buckets: run.multi_step.lower(state, b, i).compile()))
  return jobs


def decoder_jobs(exp, params, searches):
  """[(name, thunk)]: the SID decoders of `searches` ({split: SearchSettings}) for every
  bucket width that split's evaluation batches take."""
  if exp.scores_items:
    return []
  c = exp.config
  variables = {"params": params}
  jobs = []
  for split, search in searches.items():
    fn, tables = evaluation.compiled_decoder(exp.model, exp.catalogue, search, exp.mesh)
    rows = getattr(exp.data, split)
    edges = pipeline.bucket_edges(tuple(c.data.length_buckets), rows.hist.shape[1])
    used = np.unique(pipeline.assign_buckets(rows.length, edges))
    for width in (int(edges[b]) for b in used):
      shape = (search.batch_size, width, c.sid.n_digit)
      hist = _spec(shape, jnp.int32, exp.batch_sharding)
      mask = _spec(shape[:2], jnp.bool_, exp.batch_sharding)
      jobs.append((f"{split} decoder, width {width}",
                   lambda f=fn, t=tables, h=hist, m=mask: f.lower(variables, t, h, m).compile()))
  return jobs


def compile_all(jobs, threads):
  """Runs every job's thunk, `threads` at a time; returns the wall seconds. An error in
  one is raised here, at start-up, rather than at that program's first call."""
  t = time.time()
  if threads <= 1 or len(jobs) <= 1:
    for _, thunk in jobs:
      thunk()
  else:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      for future in [pool.submit(thunk) for _, thunk in jobs]:
        future.result()
  return time.time() - t
