"""launch/ scripts: syntax, clear messages for missing variables, and the exact commands
they run (gcloud, srun, scontrol and python replaced by recorders; nothing is launched)."""

import glob
import json
import os
import subprocess
import sys

import pytest

from support.configs import ROOT

LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = sorted(glob.glob(os.path.join(LAUNCH, "*.sh")) + glob.glob(os.path.join(LAUNCH, "*.sbatch")))

# Records argv and the DIFFGRM_* environment as one JSON line in $FAKE_LOG.
_RECORDER = """#!{python}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
  f.write(json.dumps({{"tool": os.path.basename(sys.argv[0]), "argv": sys.argv[1:],
                      "env": {{k: v for k, v in os.environ.items() if k.startswith("DIFFGRM_")}}}}) + "\\n")
"""
_SCONTROL = """#!/bin/sh
printf 'gpu01\\ngpu02\\n'
"""
# Runs the task command once per task, as srun would, with SLURM_PROCID set.
_SRUN = """#!{python}
import os, subprocess, sys
args = sys.argv[1:]
n = int([a for a in args if a.startswith("--ntasks=")][0].split("=")[1])
while args[0].startswith("--"):
  args = args[1:]
for i in range(n):
  subprocess.run(args, env=dict(os.environ, SLURM_PROCID=str(i)), check=True)
"""


@pytest.fixture
def fakes(tmp_path):
  """(env for running a script, function returning the recorded calls)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name, text in (("gcloud", _RECORDER), ("python", _RECORDER), ("scontrol", _SCONTROL),
                     ("srun", _SRUN)):
    (bin_dir / name).write_text(text.format(python=sys.executable))
    (bin_dir / name).chmod(0o755)
  log = tmp_path / "calls.jsonl"
  env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "FAKE_LOG": str(log),
         "PYTHON": str(bin_dir / "python")}

  def calls():
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
  return env, calls


def run(script, args=(), env=None):
  return subprocess.run(["bash", os.path.join(LAUNCH, script), *args], env=env,
                        capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_every_script_parses_and_is_strict():
  assert {os.path.basename(s) for s in SCRIPTS} >= {"tpu_vm.sh", "gpu_local.sh", "slurm_gpu.sbatch"}
  for script in SCRIPTS:
    res = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
    assert res.returncode == 0, (script, res.stderr)
    assert "set -euo pipefail" in open(script).read(), script


TPU = {"TPU_NAME": "diffgrm", "ZONE": "us-central2-b"}


@pytest.mark.parametrize("script,args,extra_env,message", [
    ("tpu_vm.sh", ["create"], {}, "set TPU_NAME to"),
    ("tpu_vm.sh", ["create"], {"TPU_NAME": "diffgrm"}, "set ZONE to"),
    ("tpu_vm.sh", ["create"], TPU, "set ACCELERATOR_TYPE"),
    ("tpu_vm.sh", ["create"], dict(TPU, ACCELERATOR_TYPE="v9-8"), "set RUNTIME_VERSION"),
    ("tpu_vm.sh", ["run"], TPU, "set CONFIG to"),
    ("tpu_vm.sh", ["run"], dict(TPU, CONFIG="configs/demo.py"), "set WORKDIR to"),
    ("tpu_vm.sh", ["mount"], TPU, "set BUCKET to"),
    ("tpu_vm.sh", ["fetch"], dict(TPU, WORKDIR="runs/x"), "set DEST to"),
    ("tpu_vm.sh", ["bogus"], TPU, "unknown or missing command 'bogus'"),
    ("tpu_vm.sh", [], TPU, "unknown or missing command ''"),
    ("gpu_local.sh", [], {}, "set CONFIG to"),
    ("gpu_local.sh", [], {"CONFIG": "configs/demo.py"}, "set WORKDIR to"),
    ("slurm_gpu.sbatch", [], {}, "set CONFIG to"),
    ("slurm_gpu.sbatch", [], {"CONFIG": "c.py", "WORKDIR": "/w"}, "submit this script with sbatch"),
])
def test_missing_variable_is_named_and_nothing_runs(fakes, script, args, extra_env, message):
  env, calls = fakes
  res = run(script, args, dict(env, **extra_env))
  assert res.returncode != 0
  assert message in res.stderr, res.stderr
  assert calls() == []


def test_tpu_vm_commands(fakes):
  env, calls = fakes
  env = dict(env, **TPU, ACCELERATOR_TYPE="v4-32", PROJECT="my-proj")
  assert run("tpu_vm.sh", ["create"], env).returncode == 0
  assert run("tpu_vm.sh", ["queue"], dict(env, SPOT="1")).returncode == 0
  res = run("tpu_vm.sh", ["run", "--config.train.epochs=3"],
            dict(env, CONFIG="configs/sports.py", WORKDIR="/gcs/b/runs/sports run"))
  assert res.returncode == 0, res.stderr
  assert run("tpu_vm.sh", ["fetch"], dict(env, WORKDIR="runs/x", DEST=str(env["HOME"]) + "/out")).returncode == 0
  assert run("tpu_vm.sh", ["delete"], env).returncode == 0
  create, queue, ssh, scp, delete = [c["argv"] for c in calls()]
  flags = ["--zone=us-central2-b", "--project=my-proj"]
  assert create == ["compute", "tpus", "tpu-vm", "create", "diffgrm", *flags,
                    "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base"]
  assert queue == ["compute", "tpus", "queued-resources", "create", "diffgrm", "--node-id=diffgrm",
                   *flags, "--accelerator-type=v4-32", "--runtime-version=tpu-ubuntu2204-base",
                   "--spot"]
  assert ssh[:5] == ["compute", "tpus", "tpu-vm", "ssh", "diffgrm"] and "--worker=all" in ssh
  remote = [a for a in ssh if a.startswith("--command=")][0]
  assert "DIFFGRM_DISTRIBUTED=auto" in remote
  assert ("-m diffgrm_jax.train --config=configs/sports.py "
          "--workdir=/gcs/b/runs/sports\\ run --config.train.epochs=3") in remote
  assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"] and "diffgrm:diffgrm_jax/runs/x" in scp
  assert delete == ["compute", "tpus", "tpu-vm", "delete", "diffgrm", *flags, "--quiet"]


def test_slurm_starts_one_process_per_node_with_coordinator(fakes):
  env, calls = fakes
  env = dict(env, CONFIG="configs/sports.py", WORKDIR="/shared/run", SLURM_JOB_ID="1234",
             SLURM_JOB_NODELIST="gpu[01-02]", SLURM_NTASKS="2", SLURM_SUBMIT_DIR=ROOT)
  res = run("slurm_gpu.sbatch", ["--config.train.epochs=3"], env)
  assert res.returncode == 0, res.stderr
  procs = calls()
  assert [c["env"]["DIFFGRM_PROCESS_ID"] for c in procs] == ["0", "1"]
  for c in procs:
    assert c["env"]["DIFFGRM_COORDINATOR"] == "gpu01:21234"
    assert c["env"]["DIFFGRM_NUM_PROCESSES"] == "2"
    assert c["argv"] == ["-m", "diffgrm_jax.train", "--config=configs/sports.py",
                         "--workdir=/shared/run", "--config.train.epochs=3"]


def test_gpu_local_checks_for_gpus_then_trains(fakes):
  env, calls = fakes
  res = run("gpu_local.sh", ["--config.mesh.shape=4,2"],
            dict(env, CONFIG="configs/sports.py", WORKDIR="runs/s"))
  assert res.returncode == 0, res.stderr
  check, train = [c["argv"] for c in calls()]
  assert check[0] == "-c" and "default_backend" in check[1]
  assert train == ["-m", "diffgrm_jax.train", "--config=configs/sports.py", "--workdir=runs/s",
                   "--config.mesh.shape=4,2"]
