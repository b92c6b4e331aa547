"""Returning freed heap memory to the OS after compilations (diffgrm_jax/runtime/host_memory.py)."""

import ctypes
import ctypes.util
import platform

import jax
import jax.numpy as jnp
import numpy as np

from diffgrm_jax.runtime import host_memory


def _rss_bytes():
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def test_trim_returns_freed_heap_pages_to_the_os():
  if platform.libc_ver()[0] != "glibc":
    assert host_memory.trim() is False  # nothing to call outside glibc
    return
  libc = ctypes.CDLL(ctypes.util.find_library("c"))
  libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
  libc.free.argtypes = [ctypes.c_void_p]
  # 96 MiB in 64 KiB blocks (below malloc's mmap threshold: they live in the heap), all
  # touched, then freed except the last, which pins the heap's top so free() alone
  # cannot shrink it: the freed pages stay resident until trimmed.
  blocks = [libc.malloc(64 << 10) for _ in range(1536)]
  for b in blocks:
    ctypes.memset(b, 1, 64 << 10)
  for b in blocks[:-1]:
    libc.free(b)
  held = _rss_bytes()
  assert host_memory.trim() is True
  returned = held - _rss_bytes()
  libc.free(blocks[-1])
  assert returned > 64 << 20, returned / 2**20


def test_trim_after_compiles_trims_once_per_compilation(monkeypatch):
  calls = []
  monkeypatch.setattr(host_memory, "trim", lambda: calls.append(1) or True)
  host_memory.trim_after_compiles()
  host_memory.trim_after_compiles()  # idempotent: one listener
  # A program no other test compiles; numpy inputs, so nothing else is compiled on the way.
  f = jax.jit(lambda x: jnp.sin(x) * 3.25 + 0.5)
  f(np.ones(7, np.float32)).block_until_ready()
  assert len(calls) == 1
  f(np.ones(7, np.float32)).block_until_ready()  # already compiled
  assert len(calls) == 1
  f(np.ones(9, np.float32)).block_until_ready()  # a new shape is a new program
  assert len(calls) == 2
