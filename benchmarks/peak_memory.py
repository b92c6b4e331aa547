"""Peak resident memory of this process since it started (its exec), in GB.

`getrusage(RUSAGE_SELF).ru_maxrss` is not enough for a benchmark run as a subprocess: on
Linux the high-water mark survives exec, and Python starts children with vfork, so a child
reports at least its parent's peak (a parent that had prepared the data at 5 GB made every
child report 5 GB). /proc/self/status's VmHWM belongs to the process's own address space,
fresh at exec; elsewhere ru_maxrss is the fallback.
"""

import resource
import sys


def peak_rss_gb():
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 2 ** 20  # kB
  except OSError:
    pass
  scale = 2 ** 30 if sys.platform == "darwin" else 2 ** 20  # bytes on macOS, kB on Linux
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
