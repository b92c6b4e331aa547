"""Training loop: `train_and_evaluate(config, workdir)` and its command line.

  python -m diffgrm_jax.train --config=configs/demo.py --workdir=/tmp/demo \
      [--config.<field>=<value> ...]

Rerunning the same command on the same workdir resumes from the latest checkpoint
(parameters, optimiser, step, epoch, data-iterator position, early-stopping state;
the step's randomness is a function of the step), and ends bitwise equal to a run that
was never interrupted. SIGTERM saves and exits cleanly (code 0). A non-finite loss or
parameter stops with `TrainingError` before anything after the last good step is saved.
`train.time_limit_s` ends training early but otherwise normally: the best checkpoint is
tested and the summary says `stopped_by_time_limit`.
Bad input ends the command with one line, `error: <message>`, and exit code 1.

Host work per step is kept off the device's critical path: a step's loss is read one step
late (so the host never waits for the step it just dispatched), a new best state is copied
on device and written with the next latest checkpoint, and `summary.json` breaks the wall
time down (`timing`) so a slow run shows where its time went.
"""

import json
import math
import os
import signal
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np
from ml_collections import config_flags
from tqdm import tqdm

from diffgrm_jax import checkpointing
from diffgrm_jax import config_checks
from diffgrm_jax import data as data_lib
from diffgrm_jax import decoding
from diffgrm_jax import evaluation
from diffgrm_jax import metrics as metrics_lib
from diffgrm_jax import reporting
from diffgrm_jax import model as model_lib
from diffgrm_jax import sharding as shard_lib
from diffgrm_jax import train_step as step_lib
from diffgrm_jax import tb_writer


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a non-finite loss); the message says where it stopped."""


def selection_score(m):
  """Model selection score on validation (SPEC §4): 0.8 NDCG@10 + 0.2 Recall@10, SID level."""
  return 0.8 * m["sid/ndcg@10"] + 0.2 * m["sid/recall@10"]


class Experiment:
  """Everything built from a config that training and eval share."""

  def __init__(self, config, data=None, devices=None):
    config_checks.check_config(config)
    self.config = config
    # Mesh and device checks first: they fail in a second, data preparation may take minutes.
    self.mesh = shard_lib.make_mesh(config, devices)
    self.batch_sharding = shard_lib.batch_sharding(config, self.mesh)
    config_checks.check_against_devices(
        config, shard_lib.data_parallel_size(config, self.mesh), jax.process_count())
    self.data = data if data is not None else data_lib.prepare_data(
        config, verbose=jax.process_index() == 0)
    config_checks.check_against_data(config, self.data)
    self.model = model_lib.from_config(config)
    self.catalogue = decoding.Catalogue.from_sids(
        self.data.sids, config.sid.codebook_size, item_popularity=self.data.item_train_counts)

  def evaluate(self, params, split, beam, progress=True):
    c = self.config
    batches = data_lib.eval_batches(self.data, split, batch_size=c.decode.batch_size,
                                    buckets=tuple(c.data.length_buckets))
    return evaluation.evaluate(
        {"params": params}, self.model, self.catalogue, batches, strategy=c.decode.strategy,
        beam=beam, step_beams=tuple(c.decode.step_beams) or None, top_k=c.decode.top_k,
        greedy_last=c.decode.greedy_last, order_seed=c.decode.order_seed,
        renormalize=c.decode.renormalize_legal, mesh=self.mesh,
        batch_sharding=self.batch_sharding, progress=progress and jax.process_index() == 0)

  def popularity(self, split):
    s = getattr(self.data, split)
    return metrics_lib.popularity_baseline(self.data.item_train_counts, self.data.sids, s.target)


class _Preempted:
  """Turns SIGTERM into a flag checked between steps."""

  def __init__(self):
    self.flag = False
    self._old = None

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._old = None
    return self

  def _handle(self, signum, frame):
    self.flag = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def agree(flag) -> bool:
  """Process 0's `flag`, on every process: for decisions all processes must take at the same
  step (each process's clock differs). Every process must call it at the same point."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.bool_)))


@jax.jit
def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_and_evaluate(config, workdir, data=None, progress=True):
  """Trains (resuming if `workdir` has a checkpoint), validates, tests the best model.

  Returns the summary dict that is also written to WORKDIR/summary.json.
  """
  config_checks.check_config(config)
  os.makedirs(workdir, exist_ok=True)
  ckpt = checkpointing.Checkpoints(workdir, checkpointing.model_fingerprint(config))
  try:  # closing the managers also on errors: their threads must not outlive the program
    return _train_and_evaluate(config, workdir, ckpt, data, progress)
  finally:
    ckpt.close()


def _copy_state(state):
  # The train step donates its input state, so a state kept for later needs its own buffers.
  return jax.tree.map(jnp.copy, state)


def _train_and_evaluate(config, workdir, ckpt, data, progress):
  # ------------------------------------------------------------- setup
  t_start = time.time()
  timing = {"setup_s": 0.0, "train_loop_s": 0.0, "valid_s": 0.0, "checkpoint_s": 0.0,
            "final_eval_s": 0.0}
  # A workdir of another model fails here, before data preparation and compilation.
  ckpt.check_latest()
  exp = Experiment(config, data)
  c, is_main = config, jax.process_index() == 0
  loader = data_lib.train_loader(exp.data, batch_size=c.train.batch_size, seed=c.seed,
                                 buckets=tuple(c.data.length_buckets))
  steps_per_epoch = loader.steps_per_epoch
  total_steps = c.train.epochs * steps_per_epoch
  if c.train.max_steps:
    total_steps = min(total_steps, c.train.max_steps)
  # The schedule spans the whole run, so max_steps does not change the learning rates.
  tx, schedule = step_lib.make_optimizer(c, c.train.epochs * steps_per_epoch)
  abstract, shardings = step_lib.abstract_state(exp.model, tx, c, exp.mesh)

  # ------------------------------------------------------------- state: resume or init
  restored = ckpt.restore_latest(abstract)
  if restored is not None:
    state, meta = restored
    loader.set_state(meta["loader"])
    if is_main:
      print(f"resumed from step {meta['step']} (epoch {meta['epoch']}) of {workdir}")
  else:
    state, _ = step_lib.init_state(exp.model, tx, c, exp.mesh)
    meta = {"step": 0, "epoch": 0, "best_score": -math.inf, "best_step": None,
            "best_epoch": None, "bad_evals": 0, "history": [], "stopped_early": False}
  step = int(meta["step"])
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  if is_main:
    print(f"model: {n_params:,} parameters; {steps_per_epoch} steps/epoch; "
          f"{total_steps} steps; devices: {jax.device_count()} ({jax.devices()[0].platform}), "
          f"mesh {dict(exp.mesh.shape)}")
  train_step = step_lib.make_train_step(exp.model, tx, schedule, c, shardings, exp.batch_sharding)
  writer = tb_writer.Writer(os.path.join(workdir, "tb"), enabled=is_main,
                            resume_step=step if restored is not None else None)

  def snapshot():
    # Everything the loop needs to go on exactly: the loader position is that after the
    # batch of the last finished step, since `step` counts finished steps.
    return dict(meta, step=step, loader=loader.get_state())

  def stop(what, at):
    last = ckpt.latest.latest_step()
    where = os.path.join(workdir, "checkpoints", str(last)) if last is not None else "none"
    raise TrainingError(
        f"{what} at step {at}; last good checkpoint: {where}; nothing after it was saved "
        "(best/ is untouched); lower optim.lr or check the data, then rerun to resume")

  last_loss = [math.nan]  # of the last finished step, for the progress bar

  def finish(pending):
    """Checks and logs a dispatched step's metrics (one step late: this syncs with it)."""
    s, m = pending
    loss = float(m["loss"])
    if not math.isfinite(loss):
      stop(f"non-finite loss ({loss})", s)
    last_loss[0] = loss
    if s % c.train.log_every_steps == 0:
      writer.scalars(s, {f"train/{k}": float(v) for k, v in m.items()})

  best_pending = None  # (step, state copy, meta) of a new best not yet on disk

  def save_latest():
    nonlocal best_pending
    t = time.time()
    if best_pending:  # first, so a latest checkpoint never names a best that is not on disk
      ckpt.save_best(*best_pending)
      best_pending = None
    ckpt.save_latest(step, state, snapshot())
    timing["checkpoint_s"] += time.time() - t

  def check_state():
    # The last step's loss was finite, but its update may not be (e.g. an absurd lr).
    if not bool(_all_finite(state.params)):
      stop("non-finite parameters", step - 1)

  # ------------------------------------------------------------- loop
  done = meta["stopped_early"] or step >= total_steps
  bar = tqdm(total=total_steps, initial=step, disable=not (progress and is_main),
             desc="train", unit="step", dynamic_ncols=True)
  pending = None  # (step, metrics) of the last dispatched step, finished one step late
  rows_seen, t_rows = 0, time.time()
  time_up = False
  timing["setup_s"] = time.time() - t_start
  t_loop = time.time()

  with _Preempted() as preempted:
    while not done:
      batch = next(loader)
      epoch, step_in_epoch = int(batch["epoch"]), int(batch["step_in_epoch"])
      state, m = train_step(state, step_lib.to_global(batch, exp.batch_sharding))
      if pending is not None:
        finish(pending)
      pending = (step, m)
      step += 1
      rows_seen += int(np.count_nonzero(batch["weight"])) * jax.process_count()
      bar.update(1)
      if step % 10 == 0 or step == total_steps:
        rate = rows_seen / max(time.time() - t_rows, 1e-9)
        bar.set_postfix(epoch=epoch + 1, loss=f"{last_loss[0]:.4f}", rows_s=f"{rate:.0f}")
        writer.scalars(step, {"train/rows_per_s": rate})
        rows_seen, t_rows = 0, time.time()
      end_of_epoch = step_in_epoch == steps_per_epoch - 1
      meta["epoch"] = epoch + 1 if end_of_epoch else epoch
      if end_of_epoch:
        finish(pending)
        pending = None
        check_state()
        ep = epoch + 1  # 1-based count of finished epochs
        if ep >= c.train.eval_start_epoch and (ep - c.train.eval_start_epoch) % c.train.eval_every_epochs == 0:
          t_val = time.time()
          val = exp.evaluate(state.params, "valid", c.decode.valid_beam, progress=False)
          timing["valid_s"] += time.time() - t_val
          score = selection_score(val)
          writer.scalars(step, {f"valid/{k}": v for k, v in val.items()} | {"valid/score": score})
          meta["history"].append({"epoch": ep, "step": step, "score": score, **val})
          if score > meta["best_score"]:  # strictly greater (SPEC §4)
            meta.update(best_score=score, best_step=step, best_epoch=ep, bad_evals=0)
            best_pending = (step, _copy_state(state), snapshot())
          else:
            meta["bad_evals"] += 1
          if is_main:
            tqdm.write(f"epoch {ep}: valid NDCG@10 {val['sid/ndcg@10']:.4f} "
                       f"Recall@10 {val['sid/recall@10']:.4f} score {score:.4f} "
                       f"(best {meta['best_score']:.4f} @ epoch {meta['best_epoch']})")
          if meta["bad_evals"] >= c.train.patience:
            meta["stopped_early"] = True
      # Several processes decide together, at fixed steps: a collective every step would
      # stall the dispatch pipeline.
      if c.train.time_limit_s and (jax.process_count() == 1 or step % 10 == 0 or end_of_epoch):
        time_up = agree(time.time() - t_start >= c.train.time_limit_s)
      done = meta["stopped_early"] or step >= total_steps or time_up
      every = c.train.checkpoint_every_steps
      epoch_save = end_of_epoch and (epoch + 1) % c.train.checkpoint_every_epochs == 0
      if epoch_save or done or (every and step % every == 0) or preempted.flag:
        if pending is not None:
          finish(pending)
          pending = None
          check_state()
        save_latest()
      if preempted.flag and not done:
        bar.close()
        writer.close()
        if is_main:
          print(f"SIGTERM: saved step {step} in {workdir}; rerun the same command to resume")
        return {"preempted": True, "step": step}
  bar.close()
  timing["train_loop_s"] = time.time() - t_loop - timing["valid_s"] - timing["checkpoint_s"]
  if time_up and is_main:
    print(f"train.time_limit_s={c.train.time_limit_s} reached at step {step} "
          f"(epoch {meta['epoch']}): testing the best checkpoint")

  # ------------------------------------------------------------- final evaluation
  t_final = time.time()
  best = ckpt.restore_best(abstract)
  if best is not None:
    final_params, best_meta = best[0].params, best[1]
  else:  # no validation ran (e.g. eval_start_epoch beyond the run): use the last state
    final_params, best_meta = state.params, {"step": step, "epoch": meta["epoch"]}
  # The best checkpoint was chosen by a validation decode with these very params and
  # beam: reuse its metrics instead of decoding the validation split again.
  valid = next(({k: v for k, v in h.items() if k not in ("epoch", "step", "score")}
                for h in meta["history"] if h["step"] == best_meta.get("step")), None)
  if valid is None:
    valid = exp.evaluate(final_params, "valid", c.decode.valid_beam, progress=progress)
  summary = {
      "dataset": exp.data.name,
      "model_kind": c.model.kind,
      "masking": c.masking.strategy,
      "decoding": c.decode.strategy,
      "n_params": n_params,
      "steps": step,
      "epochs_run": meta["epoch"],
      "stopped_early": meta["stopped_early"],
      "stopped_by_time_limit": time_up,
      "best_step": best_meta.get("step"),
      "best_epoch": best_meta.get("best_epoch", best_meta.get("epoch")),
      "valid": valid,
      "test": exp.evaluate(final_params, "test", c.decode.test_beam, progress=progress),
      "popularity": {"valid": exp.popularity("valid"), "test": exp.popularity("test")},
      "history": meta["history"],
  }
  timing["final_eval_s"] = time.time() - t_final
  summary.update({
      "timing": timing,
      "wall_time_s": time.time() - t_start,
      "devices": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
      "jax_version": jax.__version__,
  })
  writer.scalars(step, {f"test/{k}": v for k, v in summary["test"].items()})
  writer.close()
  if is_main:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=1)
    print(reporting.format_table(
        {"valid": summary["valid"], "test": summary["test"],
         "popularity test": summary["popularity"]["test"]}))
    print(f"summary: {os.path.join(workdir, 'summary.json')}")
  return summary


def define_flags():
  """The CLI's flags; defined only when run as a program, so importing is side-effect free."""
  config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. configs/demo.py; override fields with --config.<field>=...",
      lock_config=True)
  flags.DEFINE_string("workdir", None,
                      "Folder for checkpoints, logs and summary.json (resumes if it has a checkpoint).")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from diffgrm_jax import distributed
  distributed.maybe_initialize()
  train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  define_flags()
  config_checks.run_cli(main, TrainingError)
