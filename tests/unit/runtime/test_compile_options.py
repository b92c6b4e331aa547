"""Per-function XLA options: chosen by backend, dropped when this jaxlib lacks them."""

import jax
import numpy as np

from diffgrm_jax.runtime import compile_options


def test_cpu_options_are_used_and_others_get_none():
  assert compile_options.options("decode", "cpu") == {"xla_cpu_experimental_ynn_fusion_type": ""}
  assert compile_options.options("train", "cpu") is None  # the train step keeps XLA's defaults
  assert compile_options.options("decode", "gpu") is None
  assert compile_options.options("train", "tpu") is None


def test_an_option_this_jaxlib_lacks_is_dropped(monkeypatch):
  monkeypatch.setitem(compile_options._OPTIONS, ("decode", "cpu"),
                      {"xla_cpu_no_such_option_anywhere": True})
  assert compile_options.options("decode", "cpu") is None


def test_the_options_compile_and_change_no_result():
  x = np.arange(12, dtype=np.float32).reshape(3, 4)
  f = lambda a: jax.nn.gelu(a @ a.T).sum(-1)
  opts = compile_options.options("decode", "cpu")
  np.testing.assert_allclose(jax.jit(f, compiler_options=opts)(x), jax.jit(f)(x), rtol=1e-6)
