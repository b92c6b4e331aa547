"""Training's decoder with its last block at chosen positions (the masked digits).

The loss reads the logits of masked digits only. When the masking strategy fixes how
many there are (guided, sequential, prefix: N (N + 1) / 2 of the N x N view positions,
10 of 16 for 4 digits), the last decoder block and the heads need only run there: every
position still serves as a key of the last block's self-attention. The same loss and
gradient as `DiffGRM.decode` without dropout, the same in expectation with it
(tests/unit/model/test_masked_rows.py).

  logits = decode(model, variables, enc, hist_mask, codes, known, rows, deterministic,
                  rngs={"dropout": key})
"""

import jax.numpy as jnp


def _decode(m, enc, hist_mask, codes, known, rows, deterministic):
  x = m.decoder_inputs(codes, known, deterministic)
  self_bias, cross_bias = m.self_bias(), m.cross_bias(hist_mask)
  enc = m.cross_memory(enc)
  full_shape = x.shape
  for blk in m.dec_blocks[:-1]:
    x = blk(x, self_bias, deterministic, enc=enc, cross_bias=cross_bias)
  blk = m.dec_blocks[-1]
  b, n = x.shape[0], x.shape[-2]
  flat = lambda a: a.reshape(a.shape[0], -1, a.shape[-1])
  pick = lambda a: jnp.take_along_axis(flat(a), rows[..., None], axis=1)[:, :, None]
  h = blk.ln_self(x)
  # Query row r is position rows[r] % N of view rows[r] // N: it attends to that view's
  # keys and values, projected once per view and then gathered.
  q, k, v = blk.self_attn.project(pick(h), h)
  view = rows[:, :, None, None, None] // n
  k, v = jnp.take_along_axis(k, view, axis=1), jnp.take_along_axis(v, view, axis=1)
  bias = jnp.take(self_bias, rows % n, axis=0)[:, :, None, None, :]  # [B, R, 1(H), 1(Q), N]
  x = pick(x) + blk.self_attn.attend(q, k, v, bias, deterministic)
  x = x + blk.cross_attn(blk.ln_cross(x), enc, cross_bias, deterministic)
  x = blk.feed_forward(x, deterministic)  # [B, R, 1, D]
  # Back to [B, V, N, D]: the positions not computed hold zeros (their logits are finite
  # and meaningless; the loss ignores them).
  x = jnp.zeros((b, full_shape[1] * n, full_shape[-1]), x.dtype).at[
      jnp.arange(b)[:, None], rows].set(x[:, :, 0]).reshape(full_shape)
  return m.heads(x)


def decode(model, variables, enc, hist_mask, codes, known, rows, deterministic=True,
           rngs=None):
  """enc [B, L, D]; codes, known [B, V, N]; rows int [B, R] (distinct per row): positions
  v * N + n of the flattened views -> logits float32 [B, V, N, C], meaningful at `rows`."""
  return model.apply(variables, enc, hist_mask, codes, known, rows, deterministic,
                     rngs=rngs, method=_decode)
