"""The released code's model behaviours, as variants of the core modules.

Two behaviours of the released PyTorch model differ from the core `DiffGRM`; each is
an option of these variants (docs/release_parity.md):

  mask_cross_attention=False  the release pads every history to max_history_len, zeroes
                              the padded encoder rows and lets them take softmax weight
                              in cross-attention (the core model gives them none);
  project_guided_pass=False   guided masking's all-masked confidence pass reads the
                              encoder output itself as cross-attention keys and values,
                              without their projections (which still exist and train).

`model/factory.py` builds these variants when a config asks for either behaviour.
"""

from typing import ClassVar

import jax.numpy as jnp

from diffgrm_jax.model.diffgrm import Autoregressive
from diffgrm_jax.model.diffgrm import DiffGRM


def _encode(self, hist_sids, hist_mask, deterministic=True):
  x = DiffGRM.encode(self, hist_sids, hist_mask, deterministic)
  if self.mask_cross_attention:
    return x
  # The release zeroes padded encoder rows (they still take softmax weight).
  return x * hist_mask[..., None].astype(x.dtype)


def _cross_memory(self, enc):
  """The release pads every history to max_history_len and its zero rows take softmax
  weight, so the count of padded slots matters: restore the missing ones (exact for any
  length bucket, since a zero row has a zero key and value, projected or not)."""
  if self.mask_cross_attention:
    return enc
  n_pad = self.max_history_len - enc.shape[1]
  return jnp.pad(enc, ((0, 0), (0, n_pad), (0, 0))) if n_pad > 0 else enc


def _cross_bias(self, hist_mask):
  if self.mask_cross_attention:
    return DiffGRM.cross_bias(self, hist_mask)
  return jnp.zeros((), jnp.float32)


class ReleaseDiffGRM(DiffGRM):
  """`DiffGRM` with the released code's cross-attention padding and guided pass."""
  mask_cross_attention: bool = False
  project_guided_pass: bool = False

  kind: ClassVar[str] = "diffgrm"

  encode = _encode
  cross_memory = _cross_memory
  cross_bias = _cross_bias

  def decode_unprojected(self, enc, hist_mask, codes, known):
    """`decode` (without dropout) with cross-attention reading the encoder output
    unprojected, split into heads, as keys and values (the release's guided pass)."""
    x = self.decoder_inputs(codes, known, True)
    self_bias, cross_bias = self.self_bias(), self.cross_bias(hist_mask)
    enc = self.cross_memory(enc)
    heads = enc.astype(self.dtype).reshape(*enc.shape[:-1], self.n_heads, -1)
    for blk in self.dec_blocks:
      h = blk.ln_self(x)
      x = x + blk.self_attn(h, h, self_bias, True)
      a = blk.cross_attn
      x = x + a.attend(a.queries(blk.ln_cross(x)), heads, heads, cross_bias, True)
      x = blk.feed_forward(x, True)
    return self.heads(x)

  def guided_logits(self, enc, hist_mask):
    if self.project_guided_pass:
      return DiffGRM.guided_logits(self, enc, hist_mask)
    b, n = enc.shape[0], self.n_digit
    return self.decode_unprojected(enc, hist_mask, jnp.zeros((b, 1, n), jnp.int32),
                                   jnp.zeros((b, 1, n), bool))


class ReleaseAutoregressive(Autoregressive):
  """The autoregressive baseline with the released code's cross-attention padding."""
  mask_cross_attention: bool = False

  encode = _encode
  cross_memory = _cross_memory
  cross_bias = _cross_bias
