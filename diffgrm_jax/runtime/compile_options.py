"""XLA options per compiled function and backend (today: the decoder on CPU).

They are passed to each `jax.jit` (`compiler_options=`), not through the process-wide
XLA_FLAGS: each function gets what suits it, and a user's own flags stay untouched. Each
set is tried once on a trivial function, so a jaxlib that lacks an (experimental) option
runs without it instead of failing. Measurements: benchmarks/results/speed.md.
"""

import functools

import jax

_OPTIONS = {
    # XLA:CPU's library (YNNPACK) fusions run the decoder's matmuls slower than XLA's own
    # kernels, so the decoder goes without them; the train step is faster with them
    # (benchmarks/results/speed.md, "Decoding: per-function XLA options, ...").
    ("decode", "cpu"): {"xla_cpu_experimental_ynn_fusion_type": ""},
}


@functools.lru_cache(maxsize=None)
def _supported(options):
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(1.0).compile()
  except Exception:  # an XLA that lacks an option rejects it at compile time
    return False
  return True


def options(what, backend=None):
  """Options for compiling `what` (e.g. 'decode') on `backend` (default: JAX's
  default backend); None where there are none or this jaxlib does not know them."""
  chosen = _OPTIONS.get((what, backend or jax.default_backend()))
  if not chosen or not _supported(tuple(sorted(chosen.items()))):
    return None
  return dict(chosen)
