"""Layers: attention over keys shared by every view, and the exact GELU."""

import jax
import jax.numpy as jnp
import numpy as np

from diffgrm_jax.model.layers import Attention
from diffgrm_jax.model.layers import gelu


def test_shared_keys_match_explicit_broadcast():
  """Folding views into the query axis equals attending per view to copied keys."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 2, 4, 32)), jnp.float32)  # [B, V, Q, D]
  kv = jnp.asarray(rng.normal(size=(3, 7, 32)), jnp.float32)    # [B, K, D]
  bias = jnp.where(jnp.arange(7) < 5, 0.0, -1e9)[None, None, None, None, :]
  att = Attention(2, 32, 0.0)
  var = att.init(jax.random.key(0), x, kv, bias, True)
  shared = att.apply(var, x, kv, bias, True)
  copied = att.apply(var, x, jnp.broadcast_to(kv[:, None], (3, 2, 7, 32)), bias[:, 0, None], True)
  np.testing.assert_allclose(shared, copied, atol=1e-5)


def test_gelu_is_the_exact_gelu_with_its_gradient():
  # Independent reference: x * Phi(x) from Python's math.erf in double precision, and its
  # derivative Phi(x) + x * phi(x).
  import math
  x = np.linspace(-12.0, 12.0, 4801)
  phi = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
  want = x * phi
  dwant = phi + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
  got = np.asarray(gelu(jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-6)
  dgot = np.asarray(jax.vmap(jax.grad(gelu))(jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(dgot, dwant, atol=2e-6, rtol=1e-5)
