"""Runs a program and records every file it creates, writes, renames, deletes or reads under
a folder, and how.

  python tests/support/write_recorder.py FOLDER REPORT (-m MODULE | SCRIPT.py) [ARGS...]

Used by test_write_paths.py. A Python audit hook (`sys.addaudithook`) sees every `open` for
writing, `os.mkdir`, `os.rename`/`os.replace`, `os.remove`, `os.rmdir`, `shutil.rmtree`, ...
however the calling module imported them (numpy's `np.save` to a file name included).
Reads (`open` for reading, `os.listdir`, `os.scandir`) are recorded too: a plain read of
a gs:// workdir fails as a plain write does. (`os.path.exists` and other `stat` calls raise
no audit event and are not seen.) For each one under FOLDER, one JSON line goes to REPORT:
  {"event", "path" (relative to FOLDER), "change": false for a read,
   "via": "epath" | "tensorboardX" | "plain",
   "where": the innermost frame of the diffgrm_jax package that led to it}
"via" is "epath" when the Python stack passes through etils.epath or diffgrm_jax/runtime/paths.py
(the path layer: its calls work on gs:// as well), "tensorboardX" when it passes through
tensorboardX (its event files), "plain" otherwise. Writes made by compiled code (tensorstore
writing orbax's arrays) are not Python calls and are not seen.
"""

import json
import os
import sys
import threading

import script_target  # tests/support/script_target.py (this script's folder is on the path)

_EVENTS = {"open", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree",
           "shutil.copyfile", "shutil.copytree", "shutil.move", "os.truncate", "os.symlink",
           "os.link", "os.chmod", "os.utime", "os.listdir", "os.scandir"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_SEP = os.sep


def _paths_of(event, args):
  """(paths the event names, whether it changes them)."""
  if event == "open":
    path, _, flags = args
    return [path], bool(flags & _WRITE_FLAGS)
  if event in ("os.listdir", "os.scandir"):
    return [args[0]], False
  if event in ("os.rename", "shutil.copyfile", "shutil.copytree", "shutil.move",
               "os.symlink", "os.link"):
    return list(args[:2]), True
  dir_fd = args[-1] if event in ("os.mkdir", "os.remove", "os.rmdir", "os.chmod",
                                 "os.utime", "shutil.rmtree") else None
  if isinstance(dir_fd, int) and dir_fd >= 0:
    return [], True  # relative to an open folder: shutil.rmtree's steps (recorded as rmtree)
  return [args[0]], True


def _via_and_where(frame):
  via, where = "plain", None
  while frame is not None:
    name = frame.f_code.co_filename
    if f"{_SEP}etils{_SEP}epath{_SEP}" in name or name.endswith(f"diffgrm_jax{_SEP}runtime{_SEP}paths.py"):
      via = "epath"
    elif f"{_SEP}tensorboardX{_SEP}" in name and via == "plain":
      via = "tensorboardX"
    elif where is None and f"{_SEP}diffgrm_jax{_SEP}" in name:
      where = f"{name.split(_SEP + 'diffgrm_jax' + _SEP)[-1]}:{frame.f_lineno}"
    frame = frame.f_back
  return via, where


def main():
  folder, report_path, *target = sys.argv[1:]
  folder = os.path.realpath(folder)
  report = open(report_path, "a", buffering=1)  # opened before the hook: not recorded
  lock, busy = threading.Lock(), threading.local()

  def hook(event, args):
    if event not in _EVENTS or getattr(busy, "on", False):
      return
    busy.on = True  # realpath below must not re-enter
    try:
      names, change = _paths_of(event, args)
      for p in names:
        if isinstance(p, int) or p is None:
          continue
        real = os.path.realpath(os.fsdecode(p))
        if real == folder or real.startswith(folder + _SEP):
          via, where = _via_and_where(sys._getframe(1))
          with lock:
            report.write(json.dumps({"event": event, "path": os.path.relpath(real, folder),
                                     "change": change, "via": via, "where": where}) + "\n")
    finally:
      busy.on = False

  sys.addaudithook(hook)
  script_target.run(target)


if __name__ == "__main__":
  main()
