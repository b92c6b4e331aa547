"""The training loop: `train_and_evaluate(config, workdir)` trains, validates and tests.

Rerunning on the same workdir resumes from the latest checkpoint (parameters, optimiser,
step, epoch, data-iterator position, early-stopping state; the step's randomness is a
function of the step), and ends bitwise equal to a run that was never interrupted.
SIGTERM saves and returns `{"preempted": True, ...}`. A non-finite loss or parameter stops
with `TrainingError` before anything after the last good step is saved.
`train.time_limit_s` ends training early but otherwise normally: the best checkpoint is
tested and the summary says `stopped_by_time_limit`.

Host work per step is kept off the device's critical path: a step's loss is read one step
late (so the host never waits for the step it just dispatched), a new best state is copied
on device and written with the next latest checkpoint, and `summary.json` breaks the wall
time down (`timing`) so a slow run shows where its time went.

Reading order: `train_and_evaluate` sets up (`_start`), runs `_train_loop` (one step at a
time; `_end_of_epoch` validates), then `_final_evaluation`. What stays fixed during a run
is a `Run`; what the loop changes from step to step is a `LoopState`.
"""

import copy
import dataclasses
import math
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np
from tqdm import tqdm

from diffgrm_jax import data as data_lib
from diffgrm_jax import experiment
from diffgrm_jax import workdir as workdir_lib
from diffgrm_jax.decoding import settings as decode_settings
from diffgrm_jax.evaluation import reporting
from diffgrm_jax.runtime import compile_cache
from diffgrm_jax.runtime import host_memory
from diffgrm_jax.runtime import paths
from diffgrm_jax.runtime import tb_writer
from diffgrm_jax.training import checkpointing
from diffgrm_jax.training import precompile
from diffgrm_jax.training import step as step_lib


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a non-finite loss); the message says where it stopped."""


def sid_selection_score(m):
  """Model selection score on validation (docs/method.md, Validation and model selection):
  0.8 NDCG@10 + 0.2 Recall@10, SID level."""
  return 0.8 * m["sid/ndcg@10"] + 0.2 * m["sid/recall@10"]


def item_selection_score(m):
  """SASRec's model selection: item-level NDCG@10 on validation, as its published recipe."""
  return m["item/ndcg@10"]


def agree(flag) -> bool:
  """Process 0's `flag`, on every process: for decisions all processes must take at the same
  step (each process's clock differs). Every process must call it at the same point."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.bool_)))


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


@jax.jit
def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _copy_state(state):
  # The train step donates its input state, so a state kept for later needs its own buffers.
  return jax.tree.map(jnp.copy, state)


@dataclasses.dataclass
class Run:
  """What stays fixed during one training run."""
  exp: experiment.Experiment
  ckpt: checkpointing.Checkpoints
  workdir: str
  loader: Any  # next() -> batch; steps_per_epoch; get_state() / set_state()
  writer: tb_writer.Writer
  train_step: Callable  # (state, global batch) -> (state, metrics); donates the state
  # (state, stacked batches, bucket ids) -> (state, metrics [n]) when train.steps_per_call > 1
  multi_step: Callable | None
  n_params: int
  selection_score: Callable[[dict], float]
  valid_search: decode_settings.SearchSettings
  test_search: decode_settings.SearchSettings
  total_steps: int
  t_start: float
  timing: dict  # seconds spent per phase, written to the summary
  is_main: bool

  @property
  def config(self):
    return self.exp.config


@dataclasses.dataclass
class LoopState:
  """What the training loop changes from step to step."""
  state: Any  # the TrainState
  # Checkpointed loop state: epoch, best_score/step/epoch, bad_evals, history, stopped_early.
  meta: dict
  step: int  # finished steps
  pending: Any = None  # (first step, metrics) of the last call, finished one call late
  best_pending: Any = None  # (step, state copy, meta) of a new best not yet on disk
  last_loss: float = math.nan  # of the last finished step, for the progress bar
  time_up: bool = False


def train_and_evaluate(config, workdir, *, data=None, selection_score=None, loader=None,
                       progress=True):
  """Trains (resuming if `workdir` has a checkpoint), validates, tests the best model.

  data: prepared data (default: prepared from the config). selection_score: validation
  metrics -> score, higher is better (the best checkpoint maximises it; default
  `sid_selection_score`, or `item_selection_score` for SASRec). loader: the
  training batches (default: `data.train_loader` over the data); it must offer
  `steps_per_epoch`, `get_state` and `set_state`. Returns the summary dict that is also
  written to WORKDIR/summary.json.
  """
  host_memory.trim_after_compiles()  # one program per history bucket: see host_memory.py
  exp = experiment.Experiment(config, data)
  if selection_score is None:
    selection_score = item_selection_score if exp.scores_items else sid_selection_score
  paths.makedirs(workdir)
  ckpt = exp.checkpoints(workdir)
  try:  # closing the managers also on errors: their threads must not outlive the program
    run, loop, abstract = _start(exp, ckpt, workdir, selection_score, loader)
    preempted = _train_loop(run, loop, progress)
    if preempted:
      return {"preempted": True, "step": loop.step}
    return _final_evaluation(run, loop, abstract, progress)
  finally:
    ckpt.close()


def _start(exp, ckpt, workdir, score_fn, loader):
  """Builds the run and its loop state: resumed from the latest checkpoint, or fresh."""
  t_start = time.time()
  # compile_s: XLA compilation, spent within the other phases (none for programs the
  # persistent cache already held).
  # precompile_s: the start-up compilation (training/precompile.py), within setup_s.
  timing = {"setup_s": 0.0, "train_loop_s": 0.0, "valid_s": 0.0, "checkpoint_s": 0.0,
            "final_eval_s": 0.0, "compile_s": -compile_cache.compile_seconds(),
            "precompile_s": 0.0}
  # A workdir of another model fails here, before data preparation and compilation.
  ckpt.check_latest()
  c, is_main = exp.config, jax.process_index() == 0
  if loader is None:
    loader = data_lib.train_loader(exp.data, batch_size=c.train.batch_size, seed=c.seed,
                                   buckets=tuple(c.data.length_buckets),
                                   sequences=exp.scores_items,
                                   options=data_lib.read_options(c.data.read_threads,
                                                                 c.data.prefetch))
  steps_per_epoch = loader.steps_per_epoch
  total_steps = c.train.epochs * steps_per_epoch
  if c.train.max_steps:
    total_steps = min(total_steps, c.train.max_steps)
  # The schedule spans the whole run, so max_steps does not change the learning rates.
  tx, schedule = step_lib.make_optimizer(c, c.train.epochs * steps_per_epoch)
  abstract, shardings = exp.abstract_state(tx)
  ckpt.sid_hash = exp.sid_hash  # checkpoints record (and a resume checks) the SID table
  if is_main:  # config.json and data/: what eval and recommend need besides checkpoints
    workdir_lib.save(workdir, c, exp.data)

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
  loop = LoopState(state=state, meta=meta, step=int(meta["step"]))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  if is_main:
    print(f"model: {n_params:,} parameters; {steps_per_epoch} steps/epoch; "
          f"{total_steps} steps; devices: {jax.device_count()} ({jax.devices()[0].platform}), "
          f"mesh {dict(exp.mesh.shape)}")
  writer = tb_writer.Writer(paths.join(workdir, "tb"), enabled=is_main,
                            resume_step=loop.step if restored is not None else None)
  multi_step = None
  if c.train.steps_per_call > 1:
    if not hasattr(loader, "edges"):
      raise ValueError("train.steps_per_call > 1 needs a loader with `edges` (its buckets)")
    multi_step = step_lib.make_multi_step(exp.model, tx, schedule, c, shardings,
                                          exp.batch_sharding, loader.edges)
  run = Run(exp=exp, ckpt=ckpt, workdir=workdir, loader=loader, writer=writer,
            train_step=step_lib.make_train_step(exp.model, tx, schedule, c, shardings,
                                                exp.batch_sharding),
            multi_step=multi_step,
            n_params=n_params, selection_score=score_fn,
            valid_search=exp.search_settings("valid"),
            test_search=exp.search_settings("test"),
            total_steps=total_steps, t_start=t_start, timing=timing, is_main=is_main)
  if c.train.precompile:
    finished = meta["stopped_early"] or loop.step >= total_steps
    jobs = [] if finished else precompile.train_jobs(run, state, _call_sizes(run, loop.step))
    validates = not finished and c.train.eval_start_epoch <= c.train.epochs
    searches = dict(valid=run.valid_search) if validates else {}
    jobs += precompile.decoder_jobs(exp, state.params, dict(searches, test=run.test_search))
    threads = precompile.compile_threads(c)
    timing["precompile_s"] = precompile.compile_all(jobs, threads)
    if is_main:
      print(f"compiled {len(jobs)} programs ahead of time in {timing['precompile_s']:.1f} s "
            f"({threads} at a time)")
  return run, loop, abstract


def _train_loop(run, loop, progress):
  """Steps until the last step, early stopping or the time limit; True if SIGTERM stopped it
  (after saving)."""
  c, meta = run.config, loop.meta
  done = meta["stopped_early"] or loop.step >= run.total_steps
  bar = tqdm(total=run.total_steps, initial=loop.step, disable=not (progress and run.is_main),
             desc="train", unit="step", dynamic_ncols=True)
  rows_seen, t_rows = 0, time.time()
  run.timing["setup_s"] = time.time() - run.t_start
  t_loop = time.time()
  with _Preempted() as preempted:
    while not done:
      n = _steps_this_call(run, loop)
      batches = [next(run.loader) for _ in range(n)]
      epoch, step_in_epoch = int(batches[-1]["epoch"]), int(batches[-1]["step_in_epoch"])
      loop.state, m = _dispatch(run, loop.state, batches)
      if loop.pending is not None:
        _finish(run, loop)
      loop.pending = (loop.step, m)
      loop.step += n
      rows_seen += sum(int(np.count_nonzero(b["weight"])) for b in batches) * jax.process_count()
      bar.update(n)
      crossed_10 = loop.step // 10 != (loop.step - n) // 10  # passed a multiple of 10
      if crossed_10 or loop.step == run.total_steps:
        rate = rows_seen / max(time.time() - t_rows, 1e-9)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loop.last_loss:.4f}", rows_s=f"{rate:.0f}")
        run.writer.scalars(loop.step, {"train/rows_per_s": rate})
        rows_seen, t_rows = 0, time.time()
      end_of_epoch = step_in_epoch == run.loader.steps_per_epoch - 1
      meta["epoch"] = epoch + 1 if end_of_epoch else epoch
      if end_of_epoch:
        _sync(run, loop)
        _end_of_epoch(run, loop, epoch + 1)
      # Several processes decide together, at fixed steps: a collective every step would
      # stall the dispatch pipeline.
      if c.train.time_limit_s and (jax.process_count() == 1 or crossed_10 or end_of_epoch):
        loop.time_up = agree(time.time() - run.t_start >= c.train.time_limit_s)
      done = meta["stopped_early"] or loop.step >= run.total_steps or loop.time_up
      every = c.train.checkpoint_every_steps
      epoch_save = end_of_epoch and (epoch + 1) % c.train.checkpoint_every_epochs == 0
      if epoch_save or done or (every and loop.step % every == 0) or preempted.flag:
        if loop.pending is not None:
          _sync(run, loop)
        _save_latest(run, loop)
      if preempted.flag and not done:
        bar.close()
        run.writer.close()
        if run.is_main:
          print(f"SIGTERM: saved step {loop.step} in {run.workdir}; rerun the same command "
                "to resume")
        return True
  bar.close()
  run.timing["train_loop_s"] = (time.time() - t_loop - run.timing["valid_s"]
                                - run.timing["checkpoint_s"])
  if loop.time_up and run.is_main:
    print(f"train.time_limit_s={c.train.time_limit_s} reached at step {loop.step} "
          f"(epoch {meta['epoch']}): testing the best checkpoint")
  return False


def _steps_this_call(run, loop):
  """Steps of the next call: `train.steps_per_call`, cut at the epoch's end, the run's last
  step and the next `checkpoint_every_steps` multiple (what happens there, happens between
  calls)."""
  t = run.config.train
  spe = run.loader.steps_per_epoch
  n = min(int(t.steps_per_call), spe - loop.step % spe, run.total_steps - loop.step)
  if t.checkpoint_every_steps:
    n = min(n, t.checkpoint_every_steps - loop.step % t.checkpoint_every_steps)
  return max(n, 1)


def _call_sizes(run, step):
  """The distinct step counts > 1 of the multi-step calls from `step` to the run's end."""
  sizes = set()
  while run.multi_step is not None and step < run.total_steps:
    n = _steps_this_call(run, LoopState(state=None, meta={}, step=step))
    sizes.add(n)
    step += n
  return sorted(n for n in sizes if n > 1)


def _dispatch(run, state, batches):
  """Runs the batches' steps: one program per step, or all in one call (`multi_step`)."""
  keys = step_lib.batch_keys(run.exp.model)
  if len(batches) == 1:
    return run.train_step(state, step_lib.to_global(batches[0], run.exp.batch_sharding, keys))
  edges = run.loader.edges
  buckets = np.searchsorted(edges, [b[keys[0]].shape[1] for b in batches]).astype(np.int32)
  stacked = step_lib.stack_batches(batches, run.exp.batch_sharding, keys, max(edges))
  return run.multi_step(state, stacked, buckets)


def _finish(run, loop):
  """Checks and logs the pending call's metrics (one call late: this syncs with it)."""
  first, m = loop.pending
  values = {k: np.atleast_1d(np.asarray(v)) for k, v in m.items()}
  for i, loss in enumerate(values["loss"]):
    if not math.isfinite(float(loss)):
      _stop(run, f"non-finite loss ({float(loss)})", first + i)
  loop.last_loss = float(values["loss"][-1])
  for i in range(len(values["loss"])):
    if (first + i) % run.config.train.log_every_steps == 0:
      run.writer.scalars(first + i, {f"train/{k}": float(v[i]) for k, v in values.items()})


def _sync(run, loop):
  """Finishes the pending step and checks the state it produced."""
  _finish(run, loop)
  loop.pending = None
  # The last step's loss was finite, but its update may not be (e.g. an absurd lr).
  if not bool(_all_finite(loop.state.params)):
    _stop(run, "non-finite parameters", loop.step - 1)


def _stop(run, what, at):
  last = run.ckpt.latest.latest_step()
  where = paths.join(run.workdir, "checkpoints", str(last)) if last is not None else "none"
  raise TrainingError(
      f"{what} at step {at}; last good checkpoint: {where}; nothing after it was saved "
      "(best/ is untouched); lower optim.lr or check the data, then rerun to resume")


def _snapshot(run, loop):
  # Everything the loop needs to go on exactly: the loader position is that after the
  # batch of the last finished step, since `step` counts finished steps. A deep copy: a
  # best state waits in memory while later validations append to `meta["history"]`.
  return copy.deepcopy(dict(loop.meta, step=loop.step, loader=run.loader.get_state()))


def _save_latest(run, loop):
  t = time.time()
  if loop.best_pending:  # first, so a latest checkpoint never names a best that is not on disk
    run.ckpt.save_best(*loop.best_pending)
    loop.best_pending = None
  run.ckpt.save_latest(loop.step, loop.state, _snapshot(run, loop))
  run.timing["checkpoint_s"] += time.time() - t


def _end_of_epoch(run, loop, ep):
  """Validation after epoch `ep` (1-based) when due: history, best state, early stopping."""
  t, meta = run.config.train, loop.meta
  if ep < t.eval_start_epoch or (ep - t.eval_start_epoch) % t.eval_every_epochs:
    return
  t_val = time.time()
  val = run.exp.validate(loop.state.params, run.valid_search)  # SID level, on the device
  run.timing["valid_s"] += time.time() - t_val
  score = run.selection_score(val)
  run.writer.scalars(loop.step, {f"valid/{k}": v for k, v in val.items()} | {"valid/score": score})
  meta["history"].append({"epoch": ep, "step": loop.step, "score": score, **val})
  if score > meta["best_score"]:  # strictly greater (docs/method.md, Validation and model selection)
    meta.update(best_score=score, best_step=loop.step, best_epoch=ep, bad_evals=0)
    loop.best_pending = (loop.step, _copy_state(loop.state), _snapshot(run, loop))
  else:
    meta["bad_evals"] += 1
  if run.is_main:
    level = "item" if run.exp.scores_items else "sid"
    tqdm.write(f"epoch {ep}: valid {level} NDCG@10 {val[level + '/ndcg@10']:.4f} "
               f"Recall@10 {val[level + '/recall@10']:.4f} score {score:.4f} "
               f"(best {meta['best_score']:.4f} @ epoch {meta['best_epoch']})")
  if meta["bad_evals"] >= t.patience:
    meta["stopped_early"] = True


def _final_evaluation(run, loop, abstract, progress):
  """Tests the best checkpoint (or the last state if none), writes summary.json."""
  c, exp, meta = run.config, run.exp, loop.meta
  t_final = time.time()
  best = run.ckpt.restore_best(abstract)
  if best is not None:
    final_params, best_meta = best[0].params, best[1]
  else:  # no validation ran (e.g. eval_start_epoch beyond the run): use the last state
    final_params, best_meta = loop.state.params, {"step": loop.step, "epoch": meta["epoch"]}
  # Validation during training computed the SID level only; the summary has every level.
  valid = exp.evaluate(final_params, "valid", run.valid_search, progress=progress)
  summary = {
      "dataset": exp.data.name,
      "model_kind": c.model.kind,
      # SASRec neither masks nor searches: it scores every item.
      "masking": None if exp.scores_items else c.masking.strategy,
      "decoding": "all_items" if exp.scores_items else c.decode.strategy,
      "beams": None if exp.scores_items else {"valid": list(run.valid_search.widths),
                                              "test": list(run.test_search.widths)},
      "n_params": run.n_params,
      "steps": loop.step,
      "epochs_run": meta["epoch"],
      "stopped_early": meta["stopped_early"],
      "stopped_by_time_limit": loop.time_up,
      "best_step": best_meta.get("step"),
      "best_epoch": best_meta.get("best_epoch", best_meta.get("epoch")),
      "valid": valid,
      "test": exp.evaluate(final_params, "test", run.test_search, progress=progress),
      "popularity": {"valid": exp.popularity("valid"), "test": exp.popularity("test")},
      "history": meta["history"],
  }
  run.timing["final_eval_s"] = time.time() - t_final
  run.timing["compile_s"] += compile_cache.compile_seconds()
  summary.update({
      "timing": run.timing,
      "wall_time_s": time.time() - run.t_start,
      "devices": f"{jax.device_count()}x {jax.devices()[0].device_kind}",
      "jax_version": jax.__version__,
  })
  run.writer.scalars(loop.step, {f"test/{k}": v for k, v in summary["test"].items()})
  run.writer.close()
  if run.is_main:
    paths.write_json(paths.join(run.workdir, "summary.json"), summary)
    print(reporting.format_table(
        {"valid": summary["valid"], "test": summary["test"],
         "popularity test": summary["popularity"]["test"]}))
    print(f"summary: {paths.join(run.workdir, 'summary.json')}")
  return summary
