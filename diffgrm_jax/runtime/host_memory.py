"""Hands the host heap's free memory back to the OS after each XLA compilation (glibc).

Compiling one train step on XLA:CPU needs about 0.4 GB of short-lived host memory, more
than the compiled program keeps. glibc's malloc keeps what is freed in its heaps for
reuse instead of returning it, so a process that compiles a program per history bucket
holds its compile scratch for the rest of the run, and the next compilation's scratch
comes partly on top of it. `malloc_trim(0)` after each compilation returns the free pages
(a few milliseconds, once per compiled program). Elsewhere (macOS, musl) it does nothing.
Measurements: benchmarks/results/speed.md.
"""

import ctypes
import ctypes.util
import functools

from jax import monitoring

# JAX records this event once each backend compilation has finished (not for programs
# found in its caches).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@functools.lru_cache(maxsize=None)
def _malloc_trim():
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  except OSError:
    return None
  trim_fn = getattr(libc, "malloc_trim", None)  # glibc only
  if trim_fn is not None:
    trim_fn.argtypes, trim_fn.restype = [ctypes.c_size_t], ctypes.c_int
  return trim_fn


def trim():
  """Returns the heap's free pages to the OS; True if this C library can (glibc)."""
  trim_fn = _malloc_trim()
  if trim_fn is None:
    return False
  trim_fn(0)
  return True


def _on_event(event, duration_secs, **kwargs):
  del duration_secs, kwargs
  if event == COMPILE_EVENT:
    trim()


@functools.lru_cache(maxsize=None)
def trim_after_compiles():
  """From now on, `trim()` after every XLA compilation in this process (idempotent)."""
  monitoring.register_event_duration_secs_listener(_on_event)
