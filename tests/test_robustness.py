"""Robustness: exact resume after SIGKILL, SIGTERM preemption, atomic checkpoints,
non-finite loss, and one-line errors for bad input.

The subprocess tests run the real CLI on a tiny config (100 users, 60 items, codebook 8,
d_model 16, 18 steps) and compare every interrupted run with one uninterrupted reference
run: summaries equal, checkpoints (parameters, optimiser, step, meta) bitwise equal.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT

# Tiny overrides of configs/demo.py: 9 steps per epoch, 2 epochs, validation after each.
TINY = {
    "data.synthetic.n_users": 100, "data.synthetic.n_items": 60, "data.synthetic.n_groups": 6,
    "data.synthetic.emb_dim": 16, "data.synthetic.max_len": 8, "data.max_history_len": 8,
    "data.length_buckets": (8,), "sid.codebook_size": 8, "sid.pca_dim": 8,
    "model.d_model": 16, "model.n_heads": 1, "model.n_inner": 32, "model.n_dec_layers": 1,
    "train.batch_size": 32, "train.epochs": 2, "train.eval_start_epoch": 1,
    "train.eval_every_epochs": 1, "train.checkpoint_every_steps": 4, "optim.warmup_steps": 2,
    "decode.valid_beam": 10, "decode.test_beam": 10, "decode.step_beams": (10, 10, 10, 10),
    "decode.batch_size": 32,
}
STEPS_PER_EPOCH, TOTAL_STEPS = 9, 18
_COMPILE_CACHE = {}  # {"dir": folder}, set by the `cache` fixture
TIMEOUT = 150  # seconds for one training subprocess (about 20 s on 2 quiet cores)


# ------------------------------------------------------------------ helpers

def _flags(overrides):
  return [f"--config.{k}={'(' + ','.join(map(str, v)) + ',)' if isinstance(v, tuple) else v}"
          for k, v in overrides.items()]


def _cmd(verb, cache, workdir=None, **changes):
  overrides = dict(TINY, **{k.replace("__", "."): v for k, v in changes.items()},
                   **{"data.cache_dir": cache})
  return ([sys.executable, "-m", f"diffgrm_jax.{verb}", "--config=configs/demo.py"]
          + ([f"--workdir={workdir}"] if workdir else []) + _flags(overrides))


def _env():
  # A compilation cache shared by this module's runs: a rerun loads the executables the
  # first run compiled (the same code, so results stay bitwise equal) instead of
  # spending most of its time compiling.
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=_COMPILE_CACHE["dir"],
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env.pop("XLA_FLAGS", None)  # one CPU device, whatever the test process uses
  return env


def _tail(text, n=30):
  lines = [l for l in (text or "").splitlines() if not re.match(r"^[IW]\d{4} ", l)]
  return "\n".join(lines[-n:])


def _run(cmd, timeout=TIMEOUT):
  try:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=_env())
  except subprocess.TimeoutExpired as e:
    err = e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr
    pytest.fail(f"{' '.join(cmd[:3])} timed out after {timeout} s; stderr tail:\n{_tail(err)}")


def _ok(proc):
  assert proc.returncode == 0, f"exit code {proc.returncode}; stderr tail:\n{_tail(proc.stderr)}"
  return proc


class _Child:
  """A training subprocess writing to files (a full pipe would block it)."""

  def __init__(self, cmd, folder):
    self.out, self.err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
    with open(self.out, "w") as o, open(self.err, "w") as e:
      self.proc = subprocess.Popen(cmd, stdout=o, stderr=e, text=True, cwd=ROOT, env=_env())

  def text(self, which="err"):
    with open(self.err if which == "err" else self.out) as f:
      return f.read()

  def wait_for_checkpoint(self, workdir, timeout=TIMEOUT):
    """Polls until the first finished checkpoint exists; returns its step."""
    deadline = time.time() + timeout
    while time.time() < deadline:
      steps = _steps(os.path.join(workdir, "checkpoints"))
      if steps:
        return steps[0]
      if self.proc.poll() is not None:
        pytest.fail(f"training exited ({self.proc.returncode}) before its first checkpoint:\n"
                    f"{_tail(self.text())}")
      time.sleep(0.02)
    self.proc.kill()
    pytest.fail(f"no checkpoint after {timeout} s:\n{_tail(self.text())}")

  def wait(self, timeout=60):
    try:
      return self.proc.wait(timeout)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      pytest.fail(f"training did not exit within {timeout} s:\n{_tail(self.text())}")


def _steps(folder):
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def _checkpoint(path):
  """(leaves of the saved TrainState as numpy, meta dict) of one step folder."""
  state = ocp.StandardCheckpointer().restore(os.path.join(path, "state"))
  with open(os.path.join(path, "meta", "metadata")) as f:
    meta = json.load(f)
  return [np.asarray(x) for x in jax.tree.leaves(state)], meta


def _assert_same_run(ref, other, latest=None):
  """Same summary (but times) and bitwise-equal latest and best checkpoints; `latest`: the
  latest steps to compare when the runs saved at different steps."""
  summaries = []
  for wd in (ref, other):
    with open(os.path.join(wd, "summary.json")) as f:
      summaries.append({k: v for k, v in json.load(f).items()
                        if k not in ("wall_time_s", "timing")})
  assert summaries[0] == summaries[1]
  for sub in ("checkpoints", "best"):
    steps = _steps(os.path.join(ref, sub))
    if sub == "checkpoints" and latest is not None:
      assert set(latest) <= set(steps) and set(latest) <= set(_steps(os.path.join(other, sub)))
      steps = latest
    else:
      assert _steps(os.path.join(other, sub)) == steps, sub
    for s in steps:
      (a, meta_a), (b, meta_b) = (_checkpoint(os.path.join(wd, sub, str(s))) for wd in (ref, other))
      assert meta_a == meta_b, f"{sub}/{s} meta differs"
      assert len(a) == len(b)
      for x, y in zip(a, b):
        assert x.dtype == y.dtype and np.array_equal(x, y), f"{sub}/{s}: state differs"


def _tiny_config(cache, **changes):
  import demo  # configs/demo.py (conftest puts configs/ on the path)
  c = demo.get_config()
  for k, v in dict(TINY, **changes, **{"data.cache_dir": cache}).items():
    *path, last = k.split(".")
    node = c
    for p in path:
      node = node[p]
    node[last] = v
  return c


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """Data cache of this module's runs (and their shared compilation cache)."""
  _COMPILE_CACHE["dir"] = str(tmp_path_factory.mktemp("jax_cache"))
  return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
  """Workdir of one uninterrupted training run."""
  wd = str(tmp_path_factory.mktemp("reference"))
  _ok(_run(_cmd("train", cache, wd)))
  assert _steps(os.path.join(wd, "checkpoints")) == [16, 18]
  return wd


@pytest.fixture(scope="module")
def data(cache, reference):  # after the reference run, which fills the cache
  from diffgrm_jax import data as data_lib
  return data_lib.prepare_data(_tiny_config(cache), verbose=False)


# ------------------------------------------------------------------ resume and preemption

def test_sigkill_mid_epoch_then_rerun_ends_bitwise_equal(reference, cache, tmp_path):
  wd = str(tmp_path / "run")
  child = _Child(_cmd("train", cache, wd), str(tmp_path))
  first = child.wait_for_checkpoint(wd)
  child.proc.send_signal(signal.SIGKILL)
  child.wait()
  assert first == 4 and first % STEPS_PER_EPOCH  # killed in the middle of epoch 1
  assert not os.path.exists(os.path.join(wd, "summary.json"))

  rerun = _ok(_run(_cmd("train", cache, wd)))
  resumed = re.search(r"resumed from step (\d+)", rerun.stdout)
  assert resumed and 0 < int(resumed.group(1)) < TOTAL_STEPS, _tail(rerun.stdout)
  _assert_same_run(reference, wd)


def test_sigterm_saves_exits_zero_and_rerun_resumes(reference, cache, tmp_path):
  wd = str(tmp_path / "run")
  child = _Child(_cmd("train", cache, wd), str(tmp_path))
  child.wait_for_checkpoint(wd)
  t0 = time.time()
  child.proc.send_signal(signal.SIGTERM)
  code = child.wait(timeout=60)
  took = time.time() - t0
  out = child.text("out")
  assert code == 0, f"exit code {code}:\n{_tail(child.text())}"
  saved = re.search(r"SIGTERM: saved step (\d+) in .*; rerun the same command to resume", out)
  assert saved, _tail(out)
  step = int(saved.group(1))
  assert step in _steps(os.path.join(wd, "checkpoints")) and step < TOTAL_STEPS
  assert took < 30, f"SIGTERM took {took:.1f} s"

  # A save that was killed half-way (orbax's unfinished temporary folder of a later
  # step, with a truncated file) must be ignored and cleaned up by the rerun.
  half = os.path.join(wd, "checkpoints", f"{step + 1}.orbax-checkpoint-tmp-1700000000")
  shutil.copytree(os.path.join(wd, "checkpoints", str(step)), half)
  with open(os.path.join(half, "state", "manifest.ocdbt"), "r+b") as f:
    f.truncate(3)

  rerun = _ok(_run(_cmd("train", cache, wd)))
  assert f"resumed from step {step} " in rerun.stdout, _tail(rerun.stdout)
  assert not os.path.exists(half)
  _assert_same_run(reference, wd)


def test_time_limit_then_rerun_with_sparse_saves_ends_bitwise_equal(reference, cache, tmp_path):
  """train.time_limit_s stops after the first step and still tests; the rerun resumes,
  saves only every 2nd epoch (so a best found at epoch 1 waits in memory for the step-18
  save) and ends as the reference did."""
  wd = str(tmp_path / "run")
  first = _ok(_run(_cmd("train", cache, wd, train__time_limit_s=1e-6)))
  assert "train.time_limit_s=1e-06 reached at step 1 (epoch 0)" in first.stdout, _tail(first.stdout)
  with open(os.path.join(wd, "summary.json")) as f:
    summary = json.load(f)
  assert summary["stopped_by_time_limit"] and summary["steps"] == 1
  assert summary["test"]["n_users"] == 100 and summary["history"] == []
  assert _steps(os.path.join(wd, "checkpoints")) == [1] and _steps(os.path.join(wd, "best")) == []

  rerun = _ok(_run(_cmd("train", cache, wd, train__checkpoint_every_steps=0,
                        train__checkpoint_every_epochs=2)))
  assert "resumed from step 1 " in rerun.stdout, _tail(rerun.stdout)
  with open(os.path.join(wd, "summary.json")) as f:
    summary = json.load(f)
  assert not summary["stopped_by_time_limit"] and summary["steps"] == TOTAL_STEPS
  assert set(summary["timing"]) == {"setup_s", "train_loop_s", "valid_s", "checkpoint_s",
                                    "final_eval_s"}
  assert _steps(os.path.join(wd, "checkpoints")) == [1, 18]
  _assert_same_run(reference, wd, latest=[18])


# The first validation (epoch 1, step 9) scores best; later ones score lower.
_FIRST_IS_BEST_CHILD = """
import itertools, sys
sys.path[:0] = ["tests"]
import test_robustness as t
from diffgrm_jax import train as train_lib
scores = itertools.count(0, -1)
train_lib.selection_score = lambda m: float(next(scores))
train_lib.train_and_evaluate(t._tiny_config(sys.argv[1], **{
    "train.checkpoint_every_steps": 0, "train.checkpoint_every_epochs": 2}), sys.argv[2],
    progress=False)
"""


def test_best_kept_in_memory_is_written_with_the_next_save(cache, tmp_path):
  """With saves every 2nd epoch, the epoch-1 best is written at step 18 with its own
  (step-9) state, not the state it was overwritten with since."""
  at9 = str(tmp_path / "at9")  # max_steps leaves the schedule alone: the same step-9 state
  _ok(_run(_cmd("train", cache, at9, train__max_steps=9, train__eval_start_epoch=99)))
  wd = str(tmp_path / "run")
  _ok(_run([sys.executable, "-c", _FIRST_IS_BEST_CHILD, cache, wd]))
  assert _steps(os.path.join(wd, "checkpoints")) == [18]
  assert _steps(os.path.join(wd, "best")) == [9]
  (best, best_meta), (ref, _) = (_checkpoint(os.path.join(wd, "best", "9")),
                                 _checkpoint(os.path.join(at9, "checkpoints", "9")))
  assert best_meta["step"] == 9 and best_meta["best_step"] == 9
  assert all(np.array_equal(x, y) for x, y in zip(best, ref)) and len(best) == len(ref)
  with open(os.path.join(wd, "summary.json")) as f:
    assert json.load(f)["best_step"] == 9


# ------------------------------------------------------------------ checkpoint files

def _abstract(cache, data, **changes):
  from diffgrm_jax import train as train_lib
  from diffgrm_jax import train_step as step_lib
  config = _tiny_config(cache, **changes)
  exp = train_lib.Experiment(config, data)
  tx, _ = step_lib.make_optimizer(config, 1)
  return config, step_lib.abstract_state(exp.model, tx, config, exp.mesh)[0]


def test_half_written_save_leaves_previous_checkpoint_restorable(reference, cache, data, tmp_path):
  from diffgrm_jax import checkpointing
  wd = str(tmp_path / "wd")
  shutil.copytree(reference, wd)
  # What a kill during the save of step 19 leaves: orbax's temporary folder, half written.
  half = os.path.join(wd, "checkpoints", "19.orbax-checkpoint-tmp-1700000000")
  shutil.copytree(os.path.join(wd, "checkpoints", "18"), half)
  for name in ("manifest.ocdbt", "_METADATA"):
    with open(os.path.join(half, "state", name), "r+b") as f:
      f.truncate(5)
  os.remove(os.path.join(half, "meta", "metadata"))

  config, abstract = _abstract(cache, data)
  restored = []
  for folder in (wd, reference):
    ckpt = checkpointing.Checkpoints(folder, checkpointing.model_fingerprint(config))
    restored.append(ckpt.restore_latest(abstract))
    ckpt.close()
  (state, meta), (ref_state, _) = restored
  assert meta["step"] == 18 and int(state.step) == 18
  for x, y in zip(jax.tree.leaves(ref_state), jax.tree.leaves(state)):
    assert np.array_equal(np.asarray(x), np.asarray(y))
  assert not os.path.exists(half)  # cleaned up when the training run opens the workdir


def _damage(path):
  """Overwrites every file under `path` with garbage of a third of its size."""
  for root, _, files in os.walk(path):
    for name in files:
      p = os.path.join(root, name)
      size = os.path.getsize(p)
      with open(p, "wb") as f:
        f.write(b"\x00garbage" * max(1, size // 24))


@pytest.mark.parametrize("damage", ["garbage_state", "garbage_meta", "empty_step_folder"])
def test_damaged_checkpoint_is_a_one_line_checkpoint_error(reference, cache, data, tmp_path,
                                                           damage):
  from diffgrm_jax import checkpointing
  wd = str(tmp_path / "wd")
  shutil.copytree(reference, wd)
  if damage == "empty_step_folder":  # e.g. a copy that stopped before any file
    bad, previous = os.path.join(wd, "checkpoints", "20"), 18
    os.makedirs(bad)
  else:
    bad, previous = os.path.join(wd, "checkpoints", "18"), 16
    _damage(os.path.join(bad, "state" if damage == "garbage_state" else "meta"))
  config, abstract = _abstract(cache, data)
  ckpt = checkpointing.Checkpoints(wd, checkpointing.model_fingerprint(config))
  with pytest.raises(checkpointing.CheckpointError) as e:
    ckpt.restore_latest(abstract)
  ckpt.close()
  msg = str(e.value)
  assert "\n" not in msg
  assert re.fullmatch(rf"checkpoint {re.escape(bad)} is unreadable \(.+\); delete "
                      rf"{re.escape(bad)} to resume from step {previous}", msg), msg


# ------------------------------------------------------------------ non-finite loss

class PoisonedLoader:
  """The real training loader, but the batch of step `BAD_STEP` has NaN weights."""

  def __init__(self, *args, **kwargs):
    from diffgrm_jax import data as data_lib
    self._loader = data_lib.pipeline.train_loader(*args, **kwargs)
    self.steps_per_epoch = self._loader.steps_per_epoch
    self.get_state, self.set_state = self._loader.get_state, self._loader.set_state

  def __next__(self):
    b = next(self._loader)
    if b["epoch"] * self.steps_per_epoch + b["step_in_epoch"] == BAD_STEP:
      b = dict(b, weight=np.full_like(b["weight"], np.nan))
    return b


BAD_STEP = STEPS_PER_EPOCH + 2

# Run in a child to reuse the module's compilation cache (in-process it compiles again).
_NAN_CHILD = """
import sys
sys.path[:0] = ["tests"]
import test_robustness as t
from diffgrm_jax import train as train_lib
train_lib.data_lib.train_loader = t.PoisonedLoader
try:
  train_lib.train_and_evaluate(t._tiny_config(sys.argv[1]), sys.argv[2], progress=False)
except train_lib.TrainingError as e:
  print("TrainingError:", e)
"""


def test_nan_loss_stops_naming_step_and_last_good_checkpoint(reference, cache, tmp_path):
  wd = str(tmp_path / "wd")
  child = _ok(_run([sys.executable, "-c", _NAN_CHILD, cache, wd]))
  # Checkpoints at 4, 8, 9 (epoch end, also the best); step 11 is the poisoned one.
  last = os.path.join(wd, "checkpoints", "9")
  assert f"TrainingError: non-finite loss (nan) at step {BAD_STEP}; last good checkpoint: " \
         f"{last}; nothing after it was saved (best/ is untouched); lower optim.lr or check " \
         "the data, then rerun to resume\n" in child.stdout, _tail(child.stdout + child.stderr)
  assert _steps(os.path.join(wd, "checkpoints")) == [8, 9]
  assert _steps(os.path.join(wd, "best")) == [9]
  best, _ = _checkpoint(os.path.join(wd, "best", "9"))
  assert all(np.isfinite(x).all() for x in best if x.dtype.kind == "f")


# ------------------------------------------------------------------ bad input

def test_cli_bad_input_is_one_line_error(reference, cache, tmp_path):
  """Each case runs the real CLI (all at once, they are independent) and must end with
  one `error: ...` line, exit code 1 and no traceback."""
  empty = str(tmp_path / "empty")
  os.makedirs(empty)
  corrupt = str(tmp_path / "corrupt")
  shutil.copytree(reference, corrupt)
  _damage(os.path.join(corrupt, "best", "18", "state"))
  wd = str(tmp_path / "wd")
  cases = {
      "mistyped field": (
          _cmd("train", cache, wd) + ["--config.train.batch_sise=4"],
          r'error: --config\.train\.batch_sise: no such config field \'batch_sise\'; '
          r'did you mean "batch_size" instead of "batch_sise"\?'),
      "wrong type": (
          _cmd("train", cache, wd, train__batch_size="abc"),
          r"error: flag --config\.train\.batch_size=abc: invalid literal for int\(\) with "
          r"base 10: 'abc'"),
      "beam below top_k": (
          _cmd("train", cache, wd, decode__valid_beam=3),
          r"error: decode\.valid_beam=3 is smaller than decode\.top_k=10"),
      "mesh larger than devices": (
          _cmd("train", cache, wd, mesh__shape=(2, 1, 1)),
          r"error: mesh\.shape=\(2, 1, 1\) needs 2 devices but 1 are available"),
      "other model's workdir": (
          _cmd("train", cache, reference, model__d_model=32),
          rf"error: latest checkpoint {re.escape(reference)}/checkpoints/18 was written with a "
          r"different model config \(fingerprint \w+ != \w+\); use a fresh --workdir or the "
          r"config it was trained with"),
      "eval without checkpoint": (
          _cmd("eval", cache, empty),
          rf"error: no best checkpoint in {re.escape(empty)}; train first .*"),
      "eval of a corrupted checkpoint": (
          _cmd("eval", cache, corrupt),
          rf"error: checkpoint {re.escape(corrupt)}/best/18 is unreadable \(.+\); delete "
          rf"{re.escape(corrupt)}/best/18 or use a fresh --workdir"),
      "missing data file": (
          _cmd("prepare", cache, **{"data__source": "shared", "data__name": "nope",
                                    "data__data_dir": str(tmp_path)}),
          rf"error: {re.escape(str(tmp_path))}/nope/nope\.txt: sequence file not found .*"),
  }
  procs = {}
  for name, (cmd, _) in cases.items():
    procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, cwd=ROOT, env=_env())
  failures = []
  for name, (cmd, pattern) in cases.items():
    try:
      out, err = procs[name].communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      procs[name].kill()
      out, err = procs[name].communicate()
      failures.append(f"{name}: timed out\n{_tail(err)}")
      continue
    lines = [l for l in err.splitlines() if l.strip()]
    last = lines[-1] if lines else ""
    if (procs[name].returncode != 1 or "Traceback" in err
        or not re.fullmatch(pattern, last)):
      failures.append(f"{name}: exit {procs[name].returncode}, last line {last!r}\n"
                      f"expected {pattern!r}\n{_tail(err, 10)}")
  assert not failures, "\n\n".join(failures)
  assert not os.path.exists(wd) or not _steps(os.path.join(wd, "checkpoints"))


def test_eval_of_a_missing_workdir_creates_nothing(tmp_path):
  from diffgrm_jax import checkpointing
  with pytest.raises(checkpointing.CheckpointError,
                     match=rf"workdir {re.escape(str(tmp_path / 'nowhere'))} does not exist"):
    checkpointing.Checkpoints(str(tmp_path / "nowhere"), "x", create=False)
  assert not os.path.exists(tmp_path / "nowhere")


def test_impossible_values_are_config_errors(cache, data):
  from diffgrm_jax import config_checks
  from diffgrm_jax import train as train_lib
  from diffgrm_jax.sharding import ConfigError
  cases = [
      (dict(**{"decode.test_beam": 5}), r"decode\.test_beam=5 is smaller than decode\.top_k=10"),
      (dict(**{"decode.step_beams": (10, 10, 10, 4)}),
       r"decode\.step_beams\[-1\]=4 is smaller than decode\.top_k=10"),
      (dict(**{"model.d_model": 30, "model.n_heads": 4}),
       r"model\.d_model=30 is not divisible by model\.n_heads=4"),
  ]
  for changes, pattern in cases:
    with pytest.raises(ConfigError, match=pattern):
      config_checks.check_config(_tiny_config(cache, **changes))
  # The SID table of `data` has 4 digits of 8 codes.
  for changes in ({"sid.codebook_size": 16}, {"sid.n_digit": 3, "masking.augment_factor": 3,
                                             "decode.step_beams": (10,) * 3}):
    with pytest.raises(ConfigError, match=r"sid\.n_digit=\d, sid\.codebook_size=\d+ disagree "
                                          r"with the SID table \(4 digits of 8 codes\)"):
      train_lib.Experiment(_tiny_config(cache, **changes), data)
  with pytest.raises(ConfigError, match=r"train\.batch_size=36 is not divisible by the 8 "
                                        r"data-parallel devices \(1 processes\)"):
    config_checks.check_against_devices(_tiny_config(cache, **{"train.batch_size": 36}), 8)


def test_best_saved_again_at_the_same_step_is_kept(tmp_path):
  """A run killed between its best and latest saves repeats that best save on resume."""
  import jax.numpy as jnp
  from diffgrm_jax import checkpointing
  ckpt = checkpointing.Checkpoints(str(tmp_path), "fp")
  ckpt.save_best(9, {"w": jnp.ones(3)}, {"step": 9})
  ckpt.save_best(9, {"w": jnp.ones(3)}, {"step": 9})  # orbax alone: StepAlreadyExistsError
  ckpt.close()
  assert _steps(str(tmp_path / "best")) == [9]
