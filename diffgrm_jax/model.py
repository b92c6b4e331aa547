"""Flax modules of DIFF_GRM: item embedder, encoder, masked (or causal) decoder, heads.

Shapes use B = batch (users or rows), L = history length, V = views or beams per row,
N = n_digit, C = codebook_size, D = d_model.

The model exposes two methods that training and decoding call separately, so the
encoder runs once per row and its output is shared by every view / beam:

  enc = model.apply(params, hist_sids, hist_mask, method=DiffGRM.encode)      # [B, L, D]
  logits = model.apply(params, enc, hist_mask, codes, known, method=DiffGRM.decode)
                                                                                # [B, V, N, C]

`kind='diffgrm'`: position n of the decoder holds the embedding of digit n's code if
`known[..., n]`, else digit n's learned mask embedding; attention is bidirectional.
`kind='autoregressive'`: the decoder input is [BOS, s0, .., s_{N-2}] under a causal
mask and position n predicts digit n (`known` is ignored).

`shared_final_ln`, `attention_dropout` and `mask_cross_attention=False`, with
`decode(..., project_cross_kv=False)` for the guided pass, reproduce the released PyTorch
model exactly (docs/release_parity.md).

Parameters carry logical axis names ('vocab', 'embed', 'mlp', 'heads', 'kv', 'pos')
that `sharding.py` maps to mesh axes.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffgrm_jax.cli import ConfigError
from diffgrm_jax.dropout import Dropout

_NEG_INF = -1e9
_TINY_KEYS = 8  # attention over at most this many keys uses products and sums
_LN_EPS = 1e-5  # every LayerNorm's epsilon (torch's default, as the release)


def _normal():
  return nn.initializers.normal(stddev=0.02)


def _dense(features, axes, name, use_bias=True, dtype=jnp.float32):
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, name=name,
      kernel_init=nn.with_logical_partitioning(_normal(), axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[-1],)))


def _layer_norm(name, dtype):
  return nn.LayerNorm(
      epsilon=_LN_EPS, dtype=dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))


def _fold_views(bias, n_views):
  """Bias [B, *V(1s), H, Q, K] -> [B, H, 1, K] when it does not vary over views or queries."""
  bias = jnp.asarray(bias)
  if bias.ndim == 0:
    return bias
  assert all(s == 1 for s in bias.shape[1:1 + n_views]) and bias.shape[-2] == 1, bias.shape
  return bias.reshape(bias.shape[0], *bias.shape[1 + n_views:])


def fold_attention(p, kv, n_heads, dtype):
  """An `Attention`'s keys and values over `kv` [B, K, D], folded into its projections.

  With q = h Wq / sqrt(d), k = kv Wk, v = kv Wv per head, the logits q k^T are h (Wq k^T /
  sqrt(d)) and the output sum_k w v Wo is sum_k w (v Wo): for a fixed `kv`, queries then
  cost 2 H K D multiply-adds instead of 2 D^2 + 2 H K d (d = D / H): fewer while the keys
  number K < D / (H - 1) (85 for D 256 and 4 heads; histories hold at most 50).
  p: the module's params. Returns (qk [B, D, H * K], vo [B, H * K, D], out_bias [D]): heads
  and keys as one axis, so that a row's queries take two plain matmuls.
  """
  b, n_keys, d = kv.shape
  q, k, v, o = (p[name]["kernel"].astype(jnp.float32) for name in ("query", "key", "value", "out"))
  kv = kv.astype(jnp.float32)
  keys = jnp.einsum("bkd,dhe->bhke", kv, k)
  qk = jnp.einsum("dhe,bhke->bdhk", q, keys) / jnp.sqrt(d // n_heads).astype(jnp.float32)
  vo = jnp.einsum("bkd,dhe,hef->bhkf", kv, v, o)
  return (qk.reshape(b, d, n_heads * n_keys).astype(dtype),
          vo.reshape(b, n_heads * n_keys, d).astype(dtype), p["out"]["bias"].astype(dtype))


def self_attention_rows(p, inputs, dtype):
  """A block's self-attention rows (`_attend_rows`) for each of `inputs` [..., D]: its
  LayerNorm, then q (scaled), k and v [..., H, d]; and its output projection (kernel
  [H, d, D], bias [D]). p: the block's params."""
  a = p["self_attn"]
  # The block's LayerNorm applied to its own params, outside the module tree.
  h = nn.LayerNorm(epsilon=_LN_EPS, parent=None).apply({"params": p["ln_self"]},
                                                    inputs.astype(jnp.float32))
  q, k, v = (jnp.einsum("...d,dhe->...he", h, a[name]["kernel"].astype(jnp.float32)).astype(dtype)
             for name in ("query", "key", "value"))
  out = (a["out"]["kernel"].astype(dtype), a["out"]["bias"].astype(dtype))
  return q / jnp.sqrt(q.shape[-1]).astype(dtype), k, v, out


def _attend_folded(h, folded, bias, n_heads, dtype):
  """Attention of queries h [B, *V, Q, D] over one row's folded keys/values
  (`fold_attention`); bias broadcastable to [B, *V, H, Q, K]."""
  qk, vo, out_bias = folded
  shape = h.shape
  flat = h.reshape(shape[0], -1, shape[-1])  # views into the query axis, as `Attention`
  logits = jnp.einsum("bmd,bdj->bmj", flat, qk).astype(jnp.float32)
  logits = logits.reshape(*flat.shape[:2], n_heads, -1)  # [B, V*Q, H, K]
  bias = _fold_views(bias, len(shape) - 3)  # [B, H or 1, 1, K] or a scalar
  if jnp.ndim(bias):
    bias = jnp.swapaxes(bias, 1, 2)  # [B, 1, H or 1, K], as the logits
  weights = jax.nn.softmax(logits + bias, axis=-1).astype(dtype)
  out = jnp.einsum("bmj,bjf->bmf", weights.reshape(flat.shape[:2] + (-1,)), vo)
  return (out + out_bias).reshape(shape)


def _tiny_logits(q, k):
  """q [..., Q, H, d], k [..., K, H, d] -> logits [..., H, Q, K] as products and sums."""
  return jnp.moveaxis((q[..., :, None, :, :] * k[..., None, :, :, :]).sum(-1), -1, -3)


def _tiny_mix(weights, v):
  """weights [..., H, Q, K], v [..., K, H, d] -> [..., Q, H, d] as products and sums."""
  return (jnp.moveaxis(weights, -3, -1)[..., None] * v[..., None, :, :, :]).sum(-3)


class Attention(nn.Module):
  """Multi-head attention without QKV bias.

  Queries [..., Q, D] attend to keys/values [B, K, D] with any number of extra axes
  between B and Q on the query side (views / beams), so one set of keys and values
  serves every view of a row without being copied.
  """
  n_heads: int
  d_model: int
  dropout: float
  dtype: Any = jnp.float32
  attention_dropout: float = 0.0

  @nn.compact
  def __call__(self, x, kv, bias, deterministic, project_kv=True, kv_rows=None):
    """x: [B, *V, Q, D]; kv: [B, K, D] or [B, *V, K, D]; bias broadcastable to [B, *V, H, Q, K].

    `project_kv=False` uses `kv` itself, split into heads, as keys and values (the released
    code's guided confidence pass does this in cross-attention; the projections still exist).
    `kv_rows` int [B, R] with x [B, R, Q, D] and kv [B, V, K, D]: query row r attends to
    kv[b, kv_rows[b, r]]; keys and values are projected once per kv row, then gathered.
    """
    head_dim = self.d_model // self.n_heads

    def proj(name):
      return nn.DenseGeneral(
          (self.n_heads, head_dim), use_bias=False, dtype=self.dtype, name=name,
          kernel_init=nn.with_logical_partitioning(_normal(), ("embed", "heads", "kv")))

    q = proj("query")(x) / jnp.sqrt(head_dim).astype(self.dtype)
    k = proj("key")(kv)
    v = proj("value")(kv)
    if not project_kv:
      k = v = kv.astype(self.dtype).reshape(*kv.shape[:-1], self.n_heads, head_dim)
    if kv_rows is not None:
      rows = kv_rows[:, :, None, None, None]
      k = jnp.take_along_axis(k, rows, axis=1)
      v = jnp.take_along_axis(v, rows, axis=1)
    q_shape = q.shape
    if kv.ndim < x.ndim:
      # Shared keys/values: fold the view axes into the query axis, so each
      # (row, head) is one [V*Q, K] matmul and k/v are never broadcast or copied.
      q = q.reshape(q_shape[0], -1, *q_shape[-2:])
      bias = _fold_views(bias, x.ndim - kv.ndim)
    # A handful of keys (the decoder's self-attention over N digits), without dropout:
    # products and sums instead of matmuls of [Q, head_dim] x [head_dim, K], which XLA:CPU
    # runs as many tiny, slow dots. Not in training: there the [Q, K, head_dim] products
    # would be kept for the backward pass (+15% of the step's temporary memory).
    tiny = deterministic and k.shape[-3] <= _TINY_KEYS and kv.ndim == x.ndim
    if tiny:
      logits = _tiny_logits(q, k)
    else:
      logits = jnp.einsum("...qhd,...khd->...hqk", q, k)
    logits = logits.astype(jnp.float32) + bias
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    if self.attention_dropout > 0:
      weights = Dropout(self.attention_dropout)(weights, deterministic=deterministic)
    if tiny:
      out = _tiny_mix(weights, v)
    else:
      out = jnp.einsum("...hqk,...khd->...qhd", weights, v)
    out = out.reshape(q_shape)
    out = nn.DenseGeneral(
        self.d_model, axis=(-2, -1), use_bias=True, dtype=self.dtype, name="out",
        kernel_init=nn.with_logical_partitioning(_normal(), ("heads", "kv", "embed")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))(out)
    return Dropout(self.dropout)(out, deterministic=deterministic)


def _attend_rows(q, k, v, bias, dtype):
  """Self-attention over a handful of positions from their rows q (scaled), k, v
  [..., Q|K, H, d]; bias broadcastable to [..., H, Q, K] -> [..., Q, H, d], before the
  output projection (as `Attention` computes a handful of keys)."""
  weights = jax.nn.softmax(_tiny_logits(q, k).astype(jnp.float32) + bias, axis=-1)
  return _tiny_mix(weights.astype(dtype), v)


def gelu(x):
  """Exact GELU in the release's (torch's) form: x/2 * (1 + erf(x / sqrt 2)).

  `flax.linen.gelu(approximate=False)` computes the same function through erfc, which
  XLA:CPU expands into two branches with an exp and two divisions per element; erf is one
  rational polynomial (a quarter less time forward; benchmarks/results/speed.md). The two
  differ by at most 1e-6 in absolute value.
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


class Mlp(nn.Module):
  n_inner: int
  d_model: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic):
    h = _dense(self.n_inner, ("embed", "mlp"), "wi", dtype=self.dtype)(x)
    h = gelu(h)
    h = _dense(self.d_model, ("mlp", "embed"), "wo", dtype=self.dtype)(h)
    return Dropout(self.dropout)(h, deterministic=deterministic)


class Block(nn.Module):
  """Pre-LN block: self-attention, optional cross-attention, MLP."""
  n_heads: int
  d_model: int
  n_inner: int
  dropout: float
  cross: bool
  dtype: Any = jnp.float32
  attention_dropout: float = 0.0

  @nn.compact
  def __call__(self, x, self_bias, deterministic, enc=None, cross_bias=None,
               project_cross_kv=True, query_idx=None, query_rows=None, self_rows=None,
               folded_cross=None):
    """x: [B, *V, N, D] -> [B, *V, N, D], or [B, *V, M, D] with `query_idx` int [B, *V, M]:
    then only those positions are computed past the self-attention's keys and values
    (every position still serves as a key), and `self_bias` is [N, N] or a scalar.
    `query_rows` int [B, R] (x [B, V, N, D]): the same for R positions of the flattened
    views, v * N + n, any number per view -> [B, R, 1, D].

    Inference only (`DiffGRM.decode_context`): `self_rows` = (q, k, v, (out_kernel,
    out_bias)), the self-attention's per-position rows [B, *V, N, H, d] precomputed from
    the block's input (`self_attention_rows`) and its output projection; `folded_cross` =
    `fold_attention` of the cross-attention over `enc`.
    """
    attn = lambda name: Attention(self.n_heads, self.d_model, self.dropout, self.dtype,
                                  self.attention_dropout, name=name)
    if query_idx is not None:  # the positions computed past the self-attention's keys
      pick = lambda a, tail=1: jnp.take_along_axis(
          a, query_idx.reshape(query_idx.shape + (1,) * tail), axis=-1 - tail)
      if jnp.ndim(self_bias) == 2:  # rows of the queried positions, one head axis
        self_bias = jnp.take(self_bias, query_idx, axis=0)[..., None, :, :]
    if self_rows is not None:
      assert deterministic and query_rows is None, "precomputed rows are for inference"
      q, k, v, (out_kernel, out_bias) = self_rows
      if query_idx is not None:
        x, q = pick(x), pick(q, 2)
      att = _attend_rows(q, k, v, self_bias, self.dtype)
      x = x + jnp.einsum("...qhe,hef->...qf", att, out_kernel) + out_bias
    else:
      h = _layer_norm("ln_self", self.dtype)(x)
      if query_rows is not None:
        n = x.shape[-2]
        flat = lambda a: a.reshape(a.shape[0], -1, a.shape[-1])
        pick_rows = lambda a: jnp.take_along_axis(flat(a), query_rows[..., None], axis=1)[:, :, None]
        if jnp.ndim(self_bias) == 2:  # [B, R, 1(H), 1(Q), N]: the queried digit's row
          self_bias = jnp.take(self_bias, query_rows % n, axis=0)[:, :, None, None, :]
        x = pick_rows(x) + attn("self_attn")(pick_rows(h), h, self_bias, deterministic,
                                             kv_rows=query_rows // n)
      elif query_idx is None:
        x = x + attn("self_attn")(h, h, self_bias, deterministic)
      else:
        x = pick(x) + attn("self_attn")(pick(h), h, self_bias, deterministic)
    if self.cross:
      h = _layer_norm("ln_cross", self.dtype)(x)
      if folded_cross is not None:
        assert deterministic and project_cross_kv, "folded keys/values are for inference"
        x = x + _attend_folded(h, folded_cross, cross_bias, self.n_heads, self.dtype)
      else:
        x = x + attn("cross_attn")(h, enc, cross_bias, deterministic, project_cross_kv)
    h = _layer_norm("ln_mlp", self.dtype)(x)
    return x + Mlp(self.n_inner, self.d_model, self.dropout, self.dtype, name="mlp")(h, deterministic)


class DiffGRM(nn.Module):
  """Encoder–decoder over semantic IDs. See the module docstring for the two methods."""
  n_digit: int = 4
  codebook_size: int = 256
  d_model: int = 256
  n_heads: int = 4
  n_enc_layers: int = 1
  n_dec_layers: int = 4
  n_inner: int = 1024
  dropout: float = 0.1
  max_history_len: int = 50
  tie_heads: bool = True
  mask_cross_attention: bool = True
  kind: str = "diffgrm"
  dtype: Any = jnp.float32
  # One final LayerNorm ('final_ln') for encoder and decoder outputs, as the release has.
  shared_final_ln: bool = False
  # Dropout on the attention probabilities (the release: 0.1).
  attention_dropout: float = 0.0

  def setup(self):
    n, c, d = self.n_digit, self.codebook_size, self.d_model
    # Row n*C + c is code c of digit n: shared by encoder input, decoder input and heads.
    self.token_embedding = self.param(
        "token_embedding", nn.with_logical_partitioning(_normal(), ("vocab", "embed")), (n * c, d))
    self.item_in = _dense(d, ("mlp", "embed"), "item_in", dtype=self.dtype)
    self.item_out = _dense(d, ("embed", "mlp"), "item_out", dtype=self.dtype)
    self.position_embedding = self.param(
        "position_embedding", nn.with_logical_partitioning(_normal(), ("pos", "embed")),
        (self.max_history_len, d))
    if self.kind == "diffgrm":
      self.mask_embedding = self.param(
          "mask_embedding", nn.with_logical_partitioning(_normal(), ("pos", "embed")), (n, d))
    elif self.kind == "autoregressive":
      self.bos_embedding = self.param(
          "bos_embedding", nn.with_logical_partitioning(_normal(), ("embed",)), (d,))
    else:
      raise ValueError(f"model.kind must be 'diffgrm' or 'autoregressive', got {self.kind!r}")
    if not self.tie_heads:
      self.head_adapter = self.param(
          "head_adapter", nn.with_logical_partitioning(_normal(), ("pos", "embed", "mlp")), (n, d, d))
    block = lambda name, cross: Block(
        self.n_heads, d, self.n_inner, self.dropout, cross, self.dtype, self.attention_dropout,
        name=name)
    self.enc_blocks = [block(f"enc_{i}", False) for i in range(self.n_enc_layers)]
    self.dec_blocks = [block(f"dec_{i}", True) for i in range(self.n_dec_layers)]
    if self.shared_final_ln:
      self.final_ln = _layer_norm("final_ln", self.dtype)
    else:
      self.enc_ln = _layer_norm("enc_ln", self.dtype)
      self.dec_ln = _layer_norm("dec_ln", self.dtype)
    self.drop = Dropout(self.dropout)

  def _table(self):
    """Embedding table as [N, C, D] in the compute dtype."""
    return self.token_embedding.astype(self.dtype).reshape(
        self.n_digit, self.codebook_size, self.d_model)

  def _embed_codes(self, codes):
    """codes: int [..., N] -> [..., N, D] (digit n looks up its own slice)."""
    table = self._table()
    return table[jnp.arange(self.n_digit), codes]

  def encode(self, hist_sids, hist_mask, deterministic=True):
    """hist_sids: int [B, L, N]; hist_mask: bool [B, L] (True = real item) -> [B, L, D]."""
    b, l, n = hist_sids.shape
    x = self._embed_codes(hist_sids).reshape(b, l, n * self.d_model)
    x = self.item_out(nn.relu(self.item_in(x)))
    # Histories are left-aligned, so position 0 is the oldest kept item.
    x = x + self.position_embedding[:l].astype(self.dtype)
    x = self.drop(x, deterministic=deterministic)
    bias = jnp.where(hist_mask[:, None, None, :], 0.0, _NEG_INF)  # [B, 1(H), 1(Q), L]
    for blk in self.enc_blocks:
      x = blk(x, bias, deterministic)
    x = (self.final_ln if self.shared_final_ln else self.enc_ln)(x)
    if not self.mask_cross_attention:
      # The release zeroes padded encoder rows (they still take softmax weight).
      x = x * hist_mask[..., None].astype(x.dtype)
    return x

  def decode_context(self, enc):
    """What every decoding step of one batch shares, computed once (inference only).

    enc: [B, L, D] -> {'cross': per decoder block, its cross-attention over `enc` folded
    into its projections (`fold_attention`); 'rows': with kind 'diffgrm', the first
    block's self-attention rows for every decoder input (`self_attention_rows`), [N, C + 1,
    H, d] (C codes and the mask of each digit: a position's input is one of them), or
    None}. Pass it as `decode(..., context=)`: the logits are those without it, up to
    float rounding.
    """
    params = nn.meta.unbox(self.variables["params"])
    if not self.mask_cross_attention:
      enc = self._pad_release(enc)
    cross = tuple(fold_attention(params[f"dec_{i}"]["cross_attn"], enc, self.n_heads, self.dtype)
                  for i in range(self.n_dec_layers))
    rows = None
    if self.kind == "diffgrm":
      inputs = jnp.concatenate([self._table(), self.mask_embedding.astype(self.dtype)[:, None]], 1)
      rows = self_attention_rows(params["dec_0"], inputs, self.dtype)
    return {"cross": cross, "rows": rows}

  def _pad_release(self, enc):
    """The release pads every history to max_history_len and its zero rows take softmax
    weight, so the count of padded slots matters: restore the missing ones (exact for any
    length bucket, since a zero row has a zero key and value, projected or not)."""
    n_pad = self.max_history_len - enc.shape[1]
    return jnp.pad(enc, ((0, 0), (0, n_pad), (0, 0))) if n_pad > 0 else enc

  def decode(self, enc, hist_mask, codes, known, deterministic=True, project_cross_kv=True,
             query_digits=None, query_rows=None, context=None):
    """enc: [B, L, D]; codes, known: [B, V, N] -> logits float32 [B, V, N, C].

    `project_cross_kv=False`: cross-attention reads the encoder output unprojected as keys
    and values (the released code's guided confidence pass).
    `query_digits` int [B, V, M] (distinct digits per row): only the logits of those digits
    are wanted, so the last block and the heads compute M positions instead of N (every
    position is still a key) -> logits [B, V, M, C], slot m for digit query_digits[..., m].
    `query_rows` int [B, R] (distinct per row): the same for positions v * N + n of the
    flattened views, any number per view (training: the masked digits of every view).
    """
    emb = self._embed_codes(codes)  # [B, V, N, D]
    n = self.n_digit
    if self.kind == "diffgrm":
      x = jnp.where(known[..., None], emb, self.mask_embedding.astype(self.dtype))
      self_bias = jnp.zeros((n, n), jnp.float32)
    else:
      bos = jnp.broadcast_to(self.bos_embedding.astype(self.dtype), emb[..., :1, :].shape)
      x = jnp.concatenate([bos, emb[..., :-1, :]], axis=-2)
      causal = jnp.tril(jnp.ones((n, n), bool))
      self_bias = jnp.where(causal, 0.0, _NEG_INF)
    x = self.drop(x, deterministic=deterministic)
    if self.mask_cross_attention:
      cross_bias = jnp.where(hist_mask, 0.0, _NEG_INF)[:, None, None, None, :]  # [B,1,H,Q,L]
    else:
      cross_bias = jnp.zeros((), jnp.float32)
      if context is None:  # the context's fold has the padded slots already
        enc = self._pad_release(enc)
    self_rows = None
    if context is not None and context["rows"] is not None:
      # The first block's self-attention rows of each position's input (a code or the mask).
      slot = jnp.where(known, codes, self.codebook_size)
      self_rows = tuple(r[jnp.arange(n), slot] for r in context["rows"][:3]) + (
          context["rows"][3],)  # q, k, v per position; the output projection
    last = len(self.dec_blocks) - 1
    full_shape = x.shape
    for i, blk in enumerate(self.dec_blocks):
      idx = query_digits if i == last else None
      rows = query_rows if i == last else None
      x = blk(x, self_bias, deterministic, enc=enc, cross_bias=cross_bias,
              project_cross_kv=project_cross_kv, query_idx=idx, query_rows=rows,
              self_rows=self_rows if i == 0 else None,
              folded_cross=None if context is None else context["cross"][i])
    if query_rows is not None:
      # Back to [B, V, N, D]: the positions not queried hold zeros (their logits are
      # finite and meaningless; the caller ignores them).
      b = full_shape[0]
      x = jnp.zeros((b, full_shape[1] * n, full_shape[-1]), x.dtype).at[
          jnp.arange(b)[:, None], query_rows].set(x[:, :, 0]).reshape(full_shape)
    if query_digits is not None:
      # Back to N positions for the heads (digit n has its own head, and one einsum over
      # all N is cheaper than a head gathered per row): each digit takes its own slot's
      # output, a digit not queried slot 0's; only the queried digits' logits are returned.
      slot = jnp.argmax(query_digits[..., None, :] == jnp.arange(n)[:, None], axis=-1)
      x = jnp.take_along_axis(x, slot[..., None], axis=-2)
    h = (self.final_ln if self.shared_final_ln else self.dec_ln)(x)  # [B, V, N, D]
    if not self.tie_heads:
      h = jnp.einsum("bvnd,nde->bvne", h, self.head_adapter.astype(self.dtype))
    logits = jnp.einsum("bvnd,ncd->bvnc", h, self._table()).astype(jnp.float32)
    if query_digits is not None:
      logits = jnp.take_along_axis(logits, query_digits[..., None], axis=-2)  # [B, V, M, C]
    return logits

  def __call__(self, hist_sids, hist_mask, codes, known, deterministic=True):
    """Full forward pass (used for init): [B, V, N, C] logits."""
    enc = self.encode(hist_sids, hist_mask, deterministic)
    return self.decode(enc, hist_mask, codes, known, deterministic)


def from_config(config, dtype=None):
  """Builds the module from a config's `model` and `sid` sections."""
  m = config.model
  if dtype is None:
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[m.dtype]
  return DiffGRM(
      n_digit=config.sid.n_digit, codebook_size=config.sid.codebook_size,
      d_model=m.d_model, n_heads=m.n_heads, n_enc_layers=m.n_enc_layers,
      n_dec_layers=m.n_dec_layers, n_inner=m.n_inner, dropout=m.dropout,
      max_history_len=config.data.max_history_len, tie_heads=m.tie_heads,
      mask_cross_attention=m.mask_cross_attention, kind=m.kind, dtype=dtype,
      shared_final_ln=m.shared_final_ln, attention_dropout=m.attention_dropout)


KINDS = ("diffgrm", "autoregressive")
DTYPES = ("float32", "bfloat16")


def check_config(config):
  """The `model` section's values that cannot work (one-line `ConfigError` naming the field)."""
  m = config.model
  if m.kind not in KINDS:
    raise ConfigError(f"model.kind={m.kind!r}: must be 'diffgrm' or 'autoregressive'")
  if m.d_model % m.n_heads:
    raise ConfigError(f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}")
  if m.dtype not in DTYPES:
    raise ConfigError(f"model.dtype={m.dtype!r}: must be 'float32' or 'bfloat16'")
