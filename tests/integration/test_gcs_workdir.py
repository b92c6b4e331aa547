"""Workdirs on gs://, against a local Cloud Storage emulator (support/gcs.py): the real
commands train, are stopped by SIGTERM and by SIGKILL and resume bitwise, and `eval`,
`recommend --output=gs://...` and `plot` read and write the bucket; TensorBoard events and
scalars.jsonl land in it. Every command runs under support/loopback_only.py, so no request
leaves the machine."""

import json
import os
import re
import signal
import sys
import uuid

import pytest

from support import gcs
from support.configs import ROOT
from support.runs import (TOTAL_STEPS, Child, assert_same_run, cli_command, ok, run_command,
                          tail)

GUARD = os.path.join(ROOT, "tests", "support", "loopback_only.py")


def _guarded(cmd):
  """`python -m diffgrm_jax.<verb> ...` run under the loopback-only guard."""
  assert cmd[1] == "-m", cmd
  return [sys.executable, GUARD] + cmd[1:]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
  server = gcs.FakeGcs(str(tmp_path_factory.mktemp("gcs") / "server.log")).start()
  saved = {k: os.environ.get(k) for k in server.env()}
  os.environ.update(server.env())  # the commands inherit it (support/runs.py)
  yield server
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  server.stop()


def _bucket(emulator):
  return emulator.bucket(f"test-{uuid.uuid4().hex[:12]}")


def _wait_for_checkpoint(child, url):
  """The first finished gs:// checkpoint's step, polled while `child` trains."""
  return child.wait_for_checkpoint(url, finished=lambda: gcs.finished_steps(f"{url}/checkpoints"))


@pytest.fixture(scope="module")
def preempted_run(emulator, run_cache, reference_run, tmp_path_factory):
  """A gs:// training run stopped by SIGTERM after its first checkpoint, then rerun to the
  end: (workdir URL, the SIGTERM run's exit code and stdout, the rerun's stdout)."""
  url = _bucket(emulator) + "/run"
  folder = str(tmp_path_factory.mktemp("preempted"))
  child = Child(_guarded(cli_command("train", run_cache, url)), folder)
  _wait_for_checkpoint(child, url)
  child.proc.send_signal(signal.SIGTERM)
  code = child.wait(timeout=120)
  first = child.text("out")
  rerun = ok(run_command(_guarded(cli_command("train", run_cache, url))))
  return url, code, first, rerun.stdout


def test_sigterm_then_rerun_ends_bitwise_equal_to_the_uninterrupted_run(
    preempted_run, reference_run, tmp_path):
  url, code, first, rerun = preempted_run
  assert code == 0, tail(first)
  saved = re.search(r"SIGTERM: saved step (\d+) in gs://", first)
  assert saved and int(saved.group(1)) < TOTAL_STEPS, tail(first)
  assert f"resumed from step {saved.group(1)} (epoch" in rerun, tail(rerun)
  assert f"summary: {url}/summary.json" in rerun
  # The uninterrupted reference trained on local disk: the same parameters, checkpoints
  # and metrics, bit for bit.
  assert_same_run(reference_run, gcs.download(url, str(tmp_path / "copy")))


def test_sigkill_and_a_half_written_save_then_rerun_ends_bitwise_equal(
    emulator, run_cache, reference_run, tmp_path):
  url = _bucket(emulator) + "/run"
  child = Child(_guarded(cli_command("train", run_cache, url)), str(tmp_path))
  step = _wait_for_checkpoint(child, url)
  child.proc.send_signal(signal.SIGKILL)
  child.wait()
  fs = gcs.filesystem()
  assert not fs.exists(f"{url}/summary.json")
  # A save killed half-way on an object store: the next step's folder without orbax's
  # commit file. The rerun must ignore it and save that step again.
  done = f"{url}/checkpoints/{step}"
  later = max(gcs.finished_steps(f"{url}/checkpoints"))
  half = f"{url}/checkpoints/{later + 1}"
  for path in fs.find(done):
    if not path.endswith(gcs.COMMIT_FILE):
      fs.copy(path, half.replace("gs://", "") + path[len(done.replace("gs://", "")):])
  rerun = ok(run_command(_guarded(cli_command("train", run_cache, url))))
  resumed = re.search(r"resumed from step (\d+)", rerun.stdout)
  assert resumed and int(resumed.group(1)) == later, tail(rerun.stdout)
  assert_same_run(reference_run, gcs.download(url, str(tmp_path / "copy")))


def test_eval_reads_the_bucket_and_writes_its_result_there(preempted_run, run_cache):
  url = preempted_run[0]
  proc = ok(run_command(_guarded([sys.executable, "-m", "diffgrm_jax.eval", f"--workdir={url}"])))
  assert f"wrote {url}/eval_test.json" in proc.stdout
  with gcs.filesystem().open(f"{url}/eval_test.json") as f:
    got = json.load(f)
  with gcs.filesystem().open(f"{url}/summary.json") as f:
    summary = json.load(f)
  assert got["sid/ndcg@10"] == pytest.approx(summary["test"]["sid/ndcg@10"])


def test_recommend_writes_its_output_into_the_bucket(preempted_run):
  url = preempted_run[0]
  out = f"{url}/recs.jsonl"
  proc = ok(run_command(_guarded([sys.executable, "-m", "diffgrm_jax.recommend",
                                  f"--workdir={url}", f"--output={out}", "--k=5"])))
  assert f"to {out}" in proc.stdout
  with gcs.filesystem().open(out) as f:
    lines = [json.loads(l) for l in f.read().decode().splitlines()]
  assert len(lines) == 100 and all(len(l["recommendations"]) == 5 for l in lines)


def test_plot_and_tensorboard_files_are_in_the_bucket(preempted_run):
  url = preempted_run[0]
  fs = gcs.filesystem()
  tb = [p.rsplit("/", 1)[-1] for p in fs.ls(f"{url}/tb", detail=False)]
  assert any(n.startswith("events.out.tfevents.") for n in tb) and "scalars.jsonl" in tb
  with fs.open(f"{url}/tb/scalars.jsonl") as f:
    steps = [json.loads(l)["step"] for l in f.read().decode().splitlines() if l.strip()]
  assert steps == sorted(steps) and steps[-1] == TOTAL_STEPS  # the resume dropped repeats
  proc = ok(run_command(_guarded([sys.executable, "-m", "diffgrm_jax.plot", f"--workdir={url}"])))
  for name in ("training.png", "validation.png"):
    assert f"{url}/plots/{name}" in proc.stdout
    with fs.open(f"{url}/plots/{name}") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_guard_refuses_connections_outside_the_machine(tmp_path):
  script = tmp_path / "reach.py"
  script.write_text("import urllib.request\nurllib.request.urlopen('http://example.com')\n")
  proc = run_command([sys.executable, GUARD, str(script)], timeout=60)
  assert proc.returncode != 0 and "loopback_only: lookup of 'example.com' refused" in proc.stderr
