"""The layers of the encoder–decoder: attention, MLP and the pre-LN transformer block.

Shapes use B = batch, V = views or beams per row (any number of axes), Q = queries,
K = keys, H = heads, d = head width, D = d_model.

Parameters carry logical axis names ('vocab', 'embed', 'mlp', 'heads', 'kv', 'pos')
that `runtime/sharding.py` maps to mesh axes.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffgrm_jax.model.dropout import Dropout

NEG_INF = -1e9
LN_EPS = 1e-5  # every LayerNorm's epsilon (torch's default, as the release)
TINY_KEYS = 8  # attention over at most this many keys uses products and sums


def normal_init():
  return nn.initializers.normal(stddev=0.02)


def dense(features, axes, name=None, use_bias=True, dtype=jnp.float32):
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, name=name,
      kernel_init=nn.with_logical_partitioning(normal_init(), axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[-1],)))


def layer_norm(dtype, name=None):
  return nn.LayerNorm(
      epsilon=LN_EPS, dtype=dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))


def fold_views(bias, n_views):
  """Bias [B, *V(1s), H, Q, K] -> [B, H, 1, K] when it does not vary over views or queries."""
  bias = jnp.asarray(bias)
  if bias.ndim == 0:
    return bias
  assert all(s == 1 for s in bias.shape[1:1 + n_views]) and bias.shape[-2] == 1, bias.shape
  return bias.reshape(bias.shape[0], *bias.shape[1 + n_views:])


def tiny_logits(q, k):
  """q [..., Q, H, d], k [..., K, H, d] -> logits [..., H, Q, K] as products and sums."""
  return jnp.moveaxis((q[..., :, None, :, :] * k[..., None, :, :, :]).sum(-1), -1, -3)


def tiny_mix(weights, v):
  """weights [..., H, Q, K], v [..., K, H, d] -> [..., Q, H, d] as products and sums."""
  return (jnp.moveaxis(weights, -3, -1)[..., None] * v[..., None, :, :, :]).sum(-3)


def gelu(x):
  """Exact GELU in the release's (torch's) form: x/2 * (1 + erf(x / sqrt 2)).

  `flax.linen.gelu(approximate=False)` computes the same function through erfc, which
  XLA:CPU expands into two branches with an exp and two divisions per element; erf is one
  rational polynomial (benchmarks/results/speed.md, "Dropout words from a counter hash,
  GELU through erf, ..."). The two differ by at most 1e-6 in absolute value.
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


class Attention(nn.Module):
  """Multi-head attention without QKV bias.

  Queries [B, *V, Q, D] attend to keys/values [B, K, D] (shared by every view of a row,
  never copied) or [B, *V, K, D]. `project` and `attend` are the two halves of
  `__call__`, for callers that change the keys in between (training's masked rows, the
  release's unprojected pass).
  """
  n_heads: int
  d_model: int
  dropout: float
  dtype: Any = jnp.float32
  attention_dropout: float = 0.0

  def setup(self):
    head_dim = self.d_model // self.n_heads
    proj = lambda: nn.DenseGeneral(
        (self.n_heads, head_dim), use_bias=False, dtype=self.dtype,
        kernel_init=nn.with_logical_partitioning(normal_init(), ("embed", "heads", "kv")))
    self.query, self.key, self.value = proj(), proj(), proj()
    self.out = nn.DenseGeneral(
        self.d_model, axis=(-2, -1), use_bias=True, dtype=self.dtype,
        kernel_init=nn.with_logical_partitioning(normal_init(), ("heads", "kv", "embed")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))
    # The dropouts keep the names flax gives compact submodules (Dropout_0, Dropout_1 in
    # call order): their random streams fold in these names, so the names fix a run's draws.
    rates = ([self.attention_dropout] if self.attention_dropout > 0 else []) + [self.dropout]
    for i, rate in enumerate(rates):
      setattr(self, f"Dropout_{i}", Dropout(rate))

  def queries(self, x):
    """x [..., D] -> q [..., H, d], scaled by 1 / sqrt(d)."""
    return self.query(x) / jnp.sqrt(self.d_model // self.n_heads).astype(self.dtype)

  def project(self, x, kv):
    """(q, k, v) [..., H, d] of queries x and keys/values kv."""
    return self.queries(x), self.key(kv), self.value(kv)

  def attend(self, q, k, v, bias, deterministic):
    """Softmax attention of q [B, *V, Q, H, d] over k, v [B, K, H, d] or [B, *V, K, H, d];
    bias broadcastable to [B, *V, H, Q, K] -> [B, *V, Q, D] after the output projection."""
    q_shape = q.shape
    if k.ndim < q.ndim:
      # Shared keys/values: fold the view axes into the query axis, so each
      # (row, head) is one [V*Q, K] matmul and k/v are never broadcast or copied.
      q = q.reshape(q_shape[0], -1, *q_shape[-2:])
      bias = fold_views(bias, len(q_shape) - k.ndim)
    # A handful of keys (the decoder's self-attention over N digits), without dropout:
    # products and sums instead of matmuls of [Q, d] x [d, K], which XLA:CPU runs as many
    # tiny, slow dots. Not in training: there the [Q, K, d] products would be kept for the
    # backward pass (+15% of the step's temporary memory).
    tiny = deterministic and k.shape[-3] <= TINY_KEYS and k.ndim == len(q_shape)
    logits = tiny_logits(q, k) if tiny else jnp.einsum("...qhd,...khd->...hqk", q, k)
    weights = jax.nn.softmax(logits.astype(jnp.float32) + bias, axis=-1).astype(self.dtype)
    if self.attention_dropout > 0:
      weights = self.Dropout_0(weights, deterministic=deterministic)
    out = tiny_mix(weights, v) if tiny else jnp.einsum("...hqk,...khd->...qhd", weights, v)
    out = self.out(out.reshape(q_shape))
    last = self.Dropout_1 if self.attention_dropout > 0 else self.Dropout_0
    return last(out, deterministic=deterministic)

  def __call__(self, x, kv, bias, deterministic):
    """x: [B, *V, Q, D]; kv: [B, K, D] or [B, *V, K, D]; bias broadcastable to
    [B, *V, H, Q, K] -> [B, *V, Q, D]."""
    return self.attend(*self.project(x, kv), bias, deterministic)


class Mlp(nn.Module):
  n_inner: int
  d_model: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic):
    h = dense(self.n_inner, ("embed", "mlp"), "wi", dtype=self.dtype)(x)
    h = gelu(h)
    h = dense(self.d_model, ("mlp", "embed"), "wo", dtype=self.dtype)(h)
    return Dropout(self.dropout)(h, deterministic=deterministic)


class Block(nn.Module):
  """Pre-LN block: self-attention, cross-attention (decoder blocks), MLP."""
  n_heads: int
  d_model: int
  n_inner: int
  dropout: float
  cross: bool
  dtype: Any = jnp.float32
  attention_dropout: float = 0.0

  def setup(self):
    attn = lambda: Attention(self.n_heads, self.d_model, self.dropout, self.dtype,
                             self.attention_dropout)
    self.ln_self = layer_norm(self.dtype)
    self.self_attn = attn()
    if self.cross:
      self.ln_cross = layer_norm(self.dtype)
      self.cross_attn = attn()
    self.ln_mlp = layer_norm(self.dtype)
    self.mlp = Mlp(self.n_inner, self.d_model, self.dropout, self.dtype)

  def feed_forward(self, x, deterministic):
    """The residual MLP, the block's last part."""
    return x + self.mlp(self.ln_mlp(x), deterministic)

  def __call__(self, x, self_bias, deterministic, enc=None, cross_bias=None):
    """x: [B, *V, N, D] -> [B, *V, N, D]; enc [B, L, D] with cross_bias for decoder blocks."""
    h = self.ln_self(x)
    x = x + self.self_attn(h, h, self_bias, deterministic)
    if self.cross:
      x = x + self.cross_attn(self.ln_cross(x), enc, cross_bias, deterministic)
    return self.feed_forward(x, deterministic)
