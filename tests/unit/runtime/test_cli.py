"""The command lines end bad input with one line, `error: <message>`, and exit code 1."""

import os
import re
import shutil
import subprocess

from support.configs import ROOT
from support.runs import TIMEOUT, cli_command, damage_files, saved_steps, subprocess_env, tail


def test_cli_bad_input_is_one_line_error(reference_run, run_cache, tmp_path):
  """Each case runs the real CLI (all at once, they are independent) and must end with
  one `error: ...` line, exit code 1 and no traceback."""
  empty = str(tmp_path / "empty")
  os.makedirs(empty)
  corrupt = str(tmp_path / "corrupt")
  shutil.copytree(reference_run, corrupt)
  best = saved_steps(os.path.join(reference_run, "best"))[-1]
  damage_files(os.path.join(corrupt, "best", str(best), "state"))
  wd = str(tmp_path / "wd")
  cases = {
      "mistyped field": (
          cli_command("train", run_cache, wd) + ["--config.train.batch_sise=4"],
          r'error: --config\.train\.batch_sise: no such config field \'batch_sise\'; '
          r'did you mean "batch_size" instead of "batch_sise"\?'),
      "wrong type": (
          cli_command("train", run_cache, wd, train__batch_size="abc"),
          r"error: flag --config\.train\.batch_size=abc: invalid literal for int\(\) with "
          r"base 10: 'abc'"),
      "beam below top_k": (
          cli_command("train", run_cache, wd, decode__valid_beam=3),
          r"error: decode\.valid_beam=3 is smaller than decode\.top_k=10"),
      "mesh larger than devices": (
          cli_command("train", run_cache, wd, mesh__shape=(2, 1, 1), mesh__cpu_devices=1),
          r"error: mesh\.shape=\(2, 1, 1\) needs 2 devices but 1 are available"),
      "other model's workdir": (
          cli_command("train", run_cache, reference_run, model__d_model=32),
          rf"error: latest checkpoint {re.escape(reference_run)}/checkpoints/18 was written with a "
          r"different model config \(fingerprint \w+ != \w+\); use a fresh --workdir or the "
          r"config it was trained with"),
      "eval without checkpoint": (
          cli_command("eval", run_cache, empty),
          rf"error: no best checkpoint in {re.escape(empty)}; train first .*"),
      "eval of a corrupted checkpoint": (
          cli_command("eval", run_cache, corrupt),
          rf"error: checkpoint {re.escape(corrupt)}/best/{best} is unreadable \(.+\); delete "
          rf"{re.escape(corrupt)}/best/{best} or use a fresh --workdir"),
      "missing data file": (
          cli_command("prepare", run_cache, **{"data__source": "shared", "data__name": "nope",
                                    "data__data_dir": str(tmp_path)}),
          rf"error: {re.escape(str(tmp_path))}/nope/nope\.txt: sequence file not found .*"),
  }
  procs = {}
  for name, (cmd, _) in cases.items():
    procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, cwd=ROOT, env=subprocess_env())
  failures = []
  for name, (cmd, pattern) in cases.items():
    try:
      out, err = procs[name].communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      procs[name].kill()
      out, err = procs[name].communicate()
      failures.append(f"{name}: timed out\n{tail(err)}")
      continue
    lines = [l for l in err.splitlines() if l.strip()]
    last = lines[-1] if lines else ""
    if (procs[name].returncode != 1 or "Traceback" in err
        or not re.fullmatch(pattern, last)):
      failures.append(f"{name}: exit {procs[name].returncode}, last line {last!r}\n"
                      f"expected {pattern!r}\n{tail(err, 10)}")
  assert not failures, "\n\n".join(failures)
  assert not os.path.exists(wd) or not saved_steps(os.path.join(wd, "checkpoints"))
