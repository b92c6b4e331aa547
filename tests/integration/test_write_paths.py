"""Every file a run writes into (or reads from) its workdir goes through the path layer.

A plain `open(os.path.join(workdir, ...), "w")` works on a local disk and fails on
`--workdir=gs://bucket/run`; only local paths can be tried here, so this test watches how
files are written instead: the train (twice: the second resumes and deletes an unfinished
save), eval and plot commands run as a user runs them, under tests/support/write_recorder.py, which
records every file created, written, renamed, deleted or read under the workdir together
with the Python stack that did it. Any such access whose stack does not pass through
etils.epath (diffgrm_jax/runtime/paths.py, or orbax's own epath calls) fails the test, naming the
package line that made it.

The one exception: tensorboardX opens its event files (tb/events.out.tfevents.*) itself;
for gs:// it writes them with google-cloud-storage, which the [tpu] extra's gcsfs installs.
"""

import json
import os
import re
import subprocess
import sys

from support import runs as h
from support.configs import ROOT

RECORDER = os.path.join(ROOT, "tests", "support", "write_recorder.py")


def _records(report):
  with open(report) as f:
    return [json.loads(line) for line in f if line.strip()]


def _plain(records):
  return "\n".join(f"  {r['event']} {r['path']} ({'write' if r['change'] else 'read'}, from "
                   f"{r['where'] or 'outside the package'})" for r in records if r["via"] == "plain")


_PROGRAM = """
import os, shutil, sys
import numpy as np
from etils import epath
from diffgrm_jax.runtime import paths
wd = sys.argv[1]
paths.write_json(paths.join(wd, "a", "ok.json"), {"x": 1})
paths.write_json(paths.join(wd, "ok.json"), {"x": 1})
with paths.open(paths.join(wd, "ok.bin"), "wb") as f:
  f.write(b"1")
(epath.Path(wd) / "ok.txt").write_text("x")
paths.rmtree(paths.join(wd, "a"))
paths.listdir(wd)
paths.read_json(paths.join(wd, "ok.json"))
open(os.path.join(wd, "ok.txt")).read()
os.listdir(wd)
with open(os.path.join(wd, "plain.txt"), "w") as f:
  f.write("x")
os.makedirs(os.path.join(wd, "plain_dir"))
np.save(os.path.join(wd, "plain.npy"), np.zeros(2))
shutil.rmtree(os.path.join(wd, "plain_dir"))
"""


def test_recorder_tells_path_layer_writes_from_plain_ones(tmp_path):
  wd, report, program = tmp_path / "wd", tmp_path / "writes.jsonl", tmp_path / "prog.py"
  wd.mkdir()
  program.write_text(_PROGRAM)
  h.ok(subprocess.run([sys.executable, RECORDER, str(wd), str(report), str(program), str(wd)],
                      capture_output=True, text=True, cwd=ROOT, timeout=120))
  records = _records(report)
  plain = {(r["event"], r["path"], r["change"]) for r in records if r["via"] == "plain"}
  assert {x for x in plain if x[2]} == {
      ("open", "plain.txt", True), ("os.mkdir", "plain_dir", True), ("open", "plain.npy", True),
      ("shutil.rmtree", "plain_dir", True), ("os.rmdir", "plain_dir", True)}
  # The plain reads, and shutil.rmtree's own opening of the folder it empties.
  assert {x for x in plain if not x[2]} == {
      ("open", "ok.txt", False), ("os.listdir", ".", False), ("open", "plain_dir", False)}
  through_layer = {(r["event"], r["path"], r["change"]) for r in records if r["via"] == "epath"}
  assert {("os.mkdir", "a", True), ("os.rename", "a/ok.json", True), ("open", "ok.bin", True),
          ("open", "ok.txt", True), ("shutil.rmtree", "a", True),
          ("open", "ok.json", False)} <= through_layer
  assert any(x[1] == "." and not x[2] for x in through_layer)  # paths.listdir


def test_train_resume_eval_plot_write_only_through_the_path_layer(run_cache, tmp_path):
  wd, report = tmp_path / "wd", tmp_path / "writes.jsonl"

  def run(verb, *args):
    h.ok(h.run_command([sys.executable, RECORDER, str(wd), str(report), "-m",
                        f"diffgrm_jax.{verb}", *args]))

  cli_args = h.cli_command("train", run_cache, str(wd))[3:]  # --config=..., --workdir=...
  run("train", *cli_args)
  unfinished = wd / "checkpoints" / "99.orbax-checkpoint-tmp-1"
  (unfinished / "state").mkdir(parents=True)  # by the test: not recorded
  run("train", *cli_args)  # resumes at the end: cleans up, rewrites the logs and summary
  run("eval", *cli_args)
  run("plot", f"--workdir={wd}")
  records = _records(report)

  assert not _plain(records), ("workdir files written or read without the path layer "
                               "(diffgrm_jax.runtime.paths):\n" + _plain(records))
  by_tb = [r for r in records if r["via"] == "tensorboardX"]
  assert by_tb, "tensorboardX's plain open of its event file was not seen: recorder broken?"
  assert all(r["event"] == "open" and re.fullmatch(r"tb/events\.out\.tfevents\.[^/]+", r["path"])
             for r in by_tb), by_tb
  # The recorder saw each kind of output, so a bypass in any of them would have shown.
  written = {r["path"] for r in records if r["via"] == "epath" and r["change"]}
  for path in ("summary.json", "eval_test.json", "tb/scalars.jsonl", "plots/training.png",
               "plots/validation.png", os.path.join("checkpoints", "99.orbax-checkpoint-tmp-1")):
    assert path in written, f"{path} not seen among {sorted(written)[:40]}"
  assert any(p.startswith("checkpoints/18") for p in written)
  assert any(p.startswith("best/") for p in written)
  read = {r["path"] for r in records if r["via"] == "epath" and not r["change"]}
  assert {"summary.json", "tb/scalars.jsonl"} <= read  # by the plot command
  assert not unfinished.exists()
