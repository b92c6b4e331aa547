"""Runs `-m MODULE [ARGS...]` or `SCRIPT.py [ARGS...]` in this process, as `python` would,
with this checkout's package first on the path: the tail of the wrapper scripts here
(write_recorder.py, loopback_only.py), which install their hooks first."""

import os
import runpy
import sys


def run(target):
  # The package of this checkout, whatever else is installed.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  if target[0] == "-m":
    sys.argv = [target[1]] + target[2:]
    runpy.run_module(target[1], run_name="__main__", alter_sys=True)
  else:
    sys.argv = target
    runpy.run_path(target[0], run_name="__main__")
