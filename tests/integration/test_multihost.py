"""Two local processes under `jax.distributed` (CPU, gloo collectives over 127.0.0.1)
train like one process, save one orbax checkpoint together, and a single process
restores it onto one device with identical parameters.

Each process has one CPU device and the mesh is (data 1, fsdp 2), so the batch and the
FSDP-sharded parameters (and Adam moments) are split across the processes. Each process feeds
only its half of each global batch (`to_global`), as the training loop does.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

from support.configs import ROOT, tiny_config
from support.tiny import train_random_steps

N_STEPS = 3
N_PROC = 2
TIMEOUT_S = 240


def small_config():
  # A smaller graph compiles faster; what is tested does not depend on it.
  return tiny_config(**{"model.n_dec_layers": 1, "masking.strategy": "random",
                        "mesh.shape": (1, 2)})


def train(config, mesh, process_index=0, process_count=1):
  """N_STEPS steps on the same global batches; returns (losses, final state)."""
  return train_random_steps(config, mesh, N_STEPS, process_index, process_count)


def worker(workdir):
  """One of N_PROC processes; started by the test with DIFFGRM_* variables set."""
  import jax
  from jax.experimental import multihost_utils
  from diffgrm_jax.training import checkpointing
  from diffgrm_jax.runtime import distributed
  from diffgrm_jax.runtime import sharding as shard_lib
  from diffgrm_jax.model import factory as model_lib
  from diffgrm_jax.training import step as step_lib

  assert distributed.maybe_initialize()
  pid, n = jax.process_index(), jax.process_count()
  assert (n, jax.device_count(), jax.local_device_count()) == (N_PROC, N_PROC, 1)
  config = small_config()
  mesh = shard_lib.make_mesh(config)
  losses, state = train(config, mesh, pid, n)

  # Every process saves (each writes its own shards); the primary writes metadata.
  fp = checkpointing.model_fingerprint(config)
  ckpt = checkpointing.Checkpoints(workdir, fp)
  ckpt.save_latest(N_STEPS, state, {"step": N_STEPS})
  # ... and every process restores onto the same 2-process mesh.
  tx, _ = step_lib.make_optimizer(config, 10)
  abstract, _ = step_lib.abstract_state(model_lib.from_config(config), tx, config, mesh)
  restored, meta = ckpt.restore_latest(abstract)
  ckpt.close()
  assert meta["step"] == N_STEPS
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    for sa, sb in zip(a.addressable_shards, b.addressable_shards):
      np.testing.assert_array_equal(np.asarray(sa.data), np.asarray(sb.data))

  # Decisions such as train.time_limit_s's are process 0's on every process.
  from diffgrm_jax.training import loop as trainer
  assert trainer.agree(pid == 0) is True and trainer.agree(pid != 0) is False

  # Validation on the device over the two processes' users equals the full evaluation's
  # SID level (every process reads the same numbers).
  from diffgrm_jax import experiment
  from support.configs import TINY_RUN, make_config
  exp = experiment.Experiment(make_config("demo.py", **dict(
      TINY_RUN, **{"data.cache_dir": os.path.join(workdir, "cache")})))
  run_state, _ = step_lib.init_state(exp.model, tx, exp.config, exp.mesh)
  on_device = exp.validate(run_state.params)
  full = exp.evaluate(run_state.params, "valid", progress=False)
  assert on_device["n_users"] == full["n_users"] == 100, (on_device, full)
  for k, v in on_device.items():
    assert abs(v - full[k]) <= 1e-12, (k, v, full[k])

  params = multihost_utils.process_allgather(state.params, tiled=True)
  if pid == 0:
    flat = {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(params)}
    np.savez(os.path.join(workdir, "params.npz"), **flat)
  with open(os.path.join(workdir, f"losses_{pid}.json"), "w") as f:
    json.dump(losses, f)
  multihost_utils.sync_global_devices("done")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_processes(workdir):
  """Starts N_PROC workers; returns their (returncode, output); kills all on timeout."""
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if not k.startswith(("DIFFGRM_", "SLURM_", "TPU_"))}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
             DIFFGRM_COORDINATOR=f"127.0.0.1:{port}", DIFFGRM_NUM_PROCESSES=str(N_PROC))
  code = (f"import sys; sys.path[:0] = [{os.path.join(ROOT, 'tests')!r}, "
          f"{os.path.dirname(os.path.abspath(__file__))!r}]; "
          f"import test_multihost; test_multihost.worker({str(workdir)!r})")
  procs, logs = [], []
  for i in range(N_PROC):
    log = open(os.path.join(workdir, f"process_{i}.log"), "w+")
    procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=log,
                                  stderr=subprocess.STDOUT, env=dict(env, DIFFGRM_PROCESS_ID=str(i))))
    logs.append(log)
  deadline = time.time() + TIMEOUT_S
  try:
    while any(p.poll() is None for p in procs) and time.time() < deadline:
      # One failed process leaves the other waiting in a collective: stop early.
      if any(p.poll() not in (None, 0) for p in procs):
        time.sleep(2)
        break
      time.sleep(0.5)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  out = []
  for p, log in zip(procs, logs):
    log.seek(0)
    out.append((p.returncode, log.read()))
    log.close()
  return out


def test_two_processes_match_one_and_checkpoint_restores_on_one_device(tmp_path):
  import jax
  from diffgrm_jax.training import checkpointing
  from diffgrm_jax.model import factory as model_lib
  from diffgrm_jax.runtime import sharding as shard_lib
  from diffgrm_jax.training import step as step_lib

  results = _run_processes(tmp_path)
  report = "\n".join(f"--- process {i} (exit {rc}) ---\n{text[-3000:]}"
                     for i, (rc, text) in enumerate(results))
  assert all(rc == 0 for rc, _ in results), report

  per_process = [json.load(open(tmp_path / f"losses_{i}.json")) for i in range(N_PROC)]
  assert per_process[0] == per_process[1]  # replicated metrics: processes agree exactly
  config = small_config()
  config.mesh.shape = (1,)  # the same run on one device
  mesh = shard_lib.make_mesh(config, jax.devices()[:1])
  single, _ = train(config, mesh)
  np.testing.assert_allclose(per_process[0], single, rtol=2e-5)
  assert single[0] != single[-1]

  # Restore the checkpoint written by both processes in this single process, on 1 device.
  tx, _ = step_lib.make_optimizer(config, 10)
  abstract, _ = step_lib.abstract_state(model_lib.from_config(config), tx, config, mesh)
  ckpt = checkpointing.Checkpoints(str(tmp_path), checkpointing.model_fingerprint(config))
  state, meta = ckpt.restore_latest(abstract)
  ckpt.close()
  assert meta["step"] == N_STEPS and int(state.step) == N_STEPS
  saved = np.load(tmp_path / "params.npz")
  restored = {jax.tree_util.keystr(p): np.asarray(v)
              for p, v in jax.tree_util.tree_leaves_with_path(state.params)}
  assert sorted(saved.files) == sorted(restored)
  for k in saved.files:
    np.testing.assert_array_equal(restored[k], saved[k], err_msg=k)
