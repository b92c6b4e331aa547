"""The persistent XLA compilation cache, and the seconds spent compiling.

Compiling is most of a short run's time on CPU (a train-step program per history bucket,
a decoder per batch shape) and all of `recommend --user`'s. With `train.compilation_cache`
(on by default) compiled programs are kept in `<data.cache_dir>/xla`, so a second run of
the same config, `eval` and `recommend` load what training compiled: the same executables,
so the same results. The cache has a size limit, which makes JAX evict the least recently
used entries and take a file lock around every read and write, so several processes (the
workers of a slice, a training run and an `eval` beside it) can share one folder. A cache
folder chosen by the user (JAX_COMPILATION_CACHE_DIR, or JAX's own option) is left as it is.

`compile_seconds()` is the time this process has spent in XLA compilations (cache hits
cost none): `summary.json`'s `timing.compile_s`.
"""

import functools
import os
import threading

import jax
from jax import monitoring

FOLDER = "xla"
MAX_BYTES = 8 << 30  # eviction beyond this; any limit turns on the cross-process file lock
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

_lock = threading.Lock()
_seconds = [0.0]


def _on_event(event, duration_secs, **kwargs):
  del kwargs
  if event == _COMPILE_EVENT:
    with _lock:
      _seconds[0] += duration_secs


@functools.lru_cache(maxsize=None)
def _count_compiles():
  monitoring.register_event_duration_secs_listener(_on_event)


def compile_seconds():
  """Seconds of XLA compilation in this process since the first `enable` call."""
  _count_compiles()
  with _lock:
    return _seconds[0]


def enable(config):
  """Turns the cache on for this process as `config` says; returns its folder, or None
  where it stays off (`train.compilation_cache=False`) or the user chose one already."""
  _count_compiles()
  if not config.train.compilation_cache or jax.config.jax_compilation_cache_dir:
    return None
  folder = os.path.join(config.data.cache_dir, FOLDER)
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  return folder
