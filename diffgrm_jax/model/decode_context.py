"""Decoding's fast path: what every beam-search step of a batch shares, computed once.

A beam search calls the decoder N times per batch with the same histories. Three
things make those calls cheaper, with the logits of `DiffGRM.decode` (up to float
rounding; tests/unit/model/test_decode_context.py):

- Cross-attention folded into its projections. For a fixed encoder output `kv`, the
  logits q k^T are h (Wq k^T / sqrt(d)) and the output sum_k w v Wo is sum_k w (v Wo):
  queries then cost 2 H K D multiply-adds instead of 2 D^2 + 2 H K d (d = D / H), fewer
  while the keys number K < D / (H - 1) (85 for D 256 and 4 heads; histories hold at
  most 50).
- The first decoder block's self-attention rows as tables (DiffGRM only): that block's
  input at a position is one of C codes or the mask of its digit, so its LayerNorm and
  q, k, v projections are computed once for the N (C + 1) possible inputs and looked up.
- Queried digits: a step asks for the digits it can fill only, so the last block and
  the log-softmax run at M of the N positions (every position is still a key).

  context = build(model, variables, enc)                       # once per batch
  logits = decode(model, variables, context, hist_mask, codes, known, query_digits)
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffgrm_jax.model import layers


class DecodeContext(NamedTuple):
  """Built from trained parameters and one batch's encoder output (`build`)."""
  # Per decoder block, its cross-attention over the encoder output (`fold_attention`).
  cross: tuple
  # DiffGRM: the first block's self-attention rows for every decoder input
  # (`self_attention_rows`): q, k, v [N, C + 1, H, d] and (out kernel, out bias). Else None.
  rows: Any


def fold_attention(p, kv, n_heads, dtype):
  """An `Attention`'s keys and values over `kv` [B, K, D], folded into its projections.

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
  """A block's self-attention rows for each of `inputs` [..., D]: its LayerNorm, then q
  (scaled), k and v [..., H, d]; and its output projection (kernel [H, d, D], bias [D]).
  p: the block's params."""
  a = p["self_attn"]
  # The block's LayerNorm applied to its own params, outside the module tree.
  h = nn.LayerNorm(epsilon=layers.LN_EPS, parent=None).apply({"params": p["ln_self"]},
                                                             inputs.astype(jnp.float32))
  q, k, v = (jnp.einsum("...d,dhe->...he", h, a[name]["kernel"].astype(jnp.float32)).astype(dtype)
             for name in ("query", "key", "value"))
  out = (a["out"]["kernel"].astype(dtype), a["out"]["bias"].astype(dtype))
  return q / jnp.sqrt(q.shape[-1]).astype(dtype), k, v, out


def attend_folded(h, folded, bias, n_heads, dtype):
  """Attention of queries h [B, *V, Q, D] over one row's folded keys/values
  (`fold_attention`); bias broadcastable to [B, *V, H, Q, K]."""
  qk, vo, out_bias = folded
  shape = h.shape
  flat = h.reshape(shape[0], -1, shape[-1])  # views into the query axis, as `Attention`
  logits = jnp.einsum("bmd,bdj->bmj", flat, qk).astype(jnp.float32)
  logits = logits.reshape(*flat.shape[:2], n_heads, -1)  # [B, V*Q, H, K]
  bias = layers.fold_views(bias, len(shape) - 3)  # [B, H or 1, 1, K] or a scalar
  if jnp.ndim(bias):
    bias = jnp.swapaxes(bias, 1, 2)  # [B, 1, H or 1, K], as the logits
  weights = jax.nn.softmax(logits + bias, axis=-1).astype(dtype)
  out = jnp.einsum("bmj,bjf->bmf", weights.reshape(flat.shape[:2] + (-1,)), vo)
  return (out + out_bias).reshape(shape)


def attend_rows(q, k, v, bias, dtype):
  """Self-attention over a handful of positions from their rows q (scaled), k, v
  [..., Q|K, H, d]; bias broadcastable to [..., H, Q, K] -> [..., Q, H, d], before the
  output projection (as `Attention` computes a handful of keys)."""
  weights = jax.nn.softmax(layers.tiny_logits(q, k).astype(jnp.float32) + bias, axis=-1)
  return layers.tiny_mix(weights.astype(dtype), v)


def _build(m, enc):
  params = nn.meta.unbox(m.variables["params"])
  enc = m.cross_memory(enc)
  cross = tuple(fold_attention(params[f"dec_{i}"]["cross_attn"], enc, m.n_heads, m.dtype)
                for i in range(m.n_dec_layers))
  rows = None
  if m.kind == "diffgrm":
    inputs = jnp.concatenate([m.table(), m.mask_embedding.astype(m.dtype)[:, None]], 1)
    rows = self_attention_rows(params["dec_0"], inputs, m.dtype)
  return DecodeContext(cross, rows)


def build(model, variables, enc):
  """The batch's `DecodeContext` from its encoder output enc [B, L, D] (inference only)."""
  return model.apply(variables, enc, method=_build)


def _pick(a, idx, tail=1):
  """a [..., N, *tail] at positions idx int [..., M] -> [..., M, *tail]."""
  return jnp.take_along_axis(a, idx.reshape(idx.shape + (1,) * tail), axis=-1 - tail)


def _decode(m, context, hist_mask, codes, known, query_digits):
  n = m.n_digit
  x = m.decoder_inputs(codes, known, True)
  self_bias, cross_bias = m.self_bias(), m.cross_bias(hist_mask)
  last = m.n_dec_layers - 1
  full_shape = x.shape
  for i, blk in enumerate(m.dec_blocks):
    idx = query_digits if i == last else None
    bias = self_bias if idx is None else jnp.take(self_bias, idx, axis=0)[..., None, :, :]
    if i == 0 and context.rows is not None:
      # The first block's rows of each position's input (a code or the mask of its digit).
      slot = jnp.where(known, codes, m.codebook_size)
      q, k, v = (r[jnp.arange(n), slot] for r in context.rows[:3])
      out_kernel, out_bias = context.rows[3]
      if idx is not None:
        x, q = _pick(x, idx), _pick(q, idx, 2)
      att = attend_rows(q, k, v, bias, m.dtype)
      x = x + jnp.einsum("...qhe,hef->...qf", att, out_kernel) + out_bias
    else:
      h = blk.ln_self(x)
      if idx is None:
        x = x + blk.self_attn(h, h, bias, True)
      else:
        x = _pick(x, idx) + blk.self_attn(_pick(h, idx), h, bias, True)
    x = x + attend_folded(blk.ln_cross(x), context.cross[i], cross_bias, m.n_heads, m.dtype)
    x = blk.feed_forward(x, True)
  if query_digits is None:
    return m.heads(x)
  # Back to N positions for the heads (digit n has its own head, and one einsum over all
  # N is cheaper than a head gathered per row): each digit takes its own slot's output, a
  # digit not queried slot 0's; only the queried digits' logits are returned.
  slot = jnp.argmax(query_digits[..., None, :] == jnp.arange(n)[:, None], axis=-1)
  x = jnp.take_along_axis(x, slot[..., None], axis=-2)
  assert x.shape == full_shape, (x.shape, full_shape)
  return jnp.take_along_axis(m.heads(x), query_digits[..., None], axis=-2)


def decode(model, variables, context, hist_mask, codes, known, query_digits=None):
  """`DiffGRM.decode` (without dropout) through `context`: codes, known [B, V, N] ->
  logits float32 [B, V, N, C]; with `query_digits` int [B, V, M] (distinct digits per
  row) those digits only, [B, V, M, C], slot m for digit query_digits[..., m]."""
  return model.apply(variables, context, hist_mask, codes, known, query_digits,
                     method=_decode)
