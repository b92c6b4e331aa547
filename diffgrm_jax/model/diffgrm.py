"""The encoder–decoder over semantic IDs: DIFF_GRM and its autoregressive baseline.

Shapes use B = batch (users or rows), L = history length, V = views or beams per row,
N = n_digit, C = codebook_size, D = d_model.

Training and decoding call the encoder and the decoder separately, so the encoder runs
once per row and its output is shared by every view / beam:

  enc = model.apply(params, hist_sids, hist_mask, method="encode")      # [B, L, D]
  logits = model.apply(params, enc, hist_mask, codes, known, method="decode")
                                                                                # [B, V, N, C]

`DiffGRM`: position n of the decoder holds the embedding of digit n's code if
`known[..., n]`, else digit n's learned mask embedding; attention is bidirectional.
`Autoregressive`: the decoder input is [BOS, s0, .., s_{N-2}] under a causal mask and
position n predicts digit n (`known` is ignored).

Faster forms of the same decoder live beside it: `decode_context.py` (decoding: what
every beam-search step shares, computed once per batch) and `masked_rows.py` (training:
the last block at the masked digits only). The released code's variants are in
`diffgrm_jax/release/model.py`.
"""

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from diffgrm_jax.model import layers
from diffgrm_jax.model.dropout import Dropout


class DiffGRM(nn.Module):
  """Masked-prediction encoder–decoder with tied per-digit heads."""
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
  dtype: Any = jnp.float32
  # One final LayerNorm ('final_ln') for encoder and decoder outputs, as the release has.
  shared_final_ln: bool = False
  # Dropout on the attention probabilities (the release: 0.1).
  attention_dropout: float = 0.0

  kind: ClassVar[str] = "diffgrm"

  def setup(self):
    n, c, d = self.n_digit, self.codebook_size, self.d_model
    param = lambda name, axes, shape: self.param(
        name, nn.with_logical_partitioning(layers.normal_init(), axes), shape)
    # Row n*C + c is code c of digit n: shared by encoder input, decoder input and heads.
    self.token_embedding = param("token_embedding", ("vocab", "embed"), (n * c, d))
    self.item_in = layers.dense(d, ("mlp", "embed"), "item_in", dtype=self.dtype)
    self.item_out = layers.dense(d, ("embed", "mlp"), "item_out", dtype=self.dtype)
    self.position_embedding = param("position_embedding", ("pos", "embed"),
                                    (self.max_history_len, d))
    self._decoder_input_params(param)
    if not self.tie_heads:
      self.head_adapter = param("head_adapter", ("pos", "embed", "mlp"), (n, d, d))
    block = lambda name, cross: layers.Block(self.n_heads, d, self.n_inner, self.dropout, cross,
                                             self.dtype, self.attention_dropout, name=name)
    self.enc_blocks = [block(f"enc_{i}", False) for i in range(self.n_enc_layers)]
    self.dec_blocks = [block(f"dec_{i}", True) for i in range(self.n_dec_layers)]
    if self.shared_final_ln:
      self.final_ln = layers.layer_norm(self.dtype, "final_ln")
    else:
      self.enc_ln = layers.layer_norm(self.dtype, "enc_ln")
      self.dec_ln = layers.layer_norm(self.dtype, "dec_ln")
    self.drop = Dropout(self.dropout)

  def _decoder_input_params(self, param):
    # Created after the position embedding: a scope's parameters draw their initial values
    # in creation order.
    self.mask_embedding = param("mask_embedding", ("pos", "embed"), (self.n_digit, self.d_model))

  def table(self):
    """The embedding table as [N, C, D] in the compute dtype."""
    return self.token_embedding.astype(self.dtype).reshape(
        self.n_digit, self.codebook_size, self.d_model)

  def embed_codes(self, codes):
    """codes: int [..., N] -> [..., N, D] (digit n looks up its own slice)."""
    return self.table()[jnp.arange(self.n_digit), codes]

  def encode(self, hist_sids, hist_mask, deterministic=True):
    """hist_sids: int [B, L, N]; hist_mask: bool [B, L] (True = real item) -> [B, L, D]."""
    b, l, n = hist_sids.shape
    x = self.embed_codes(hist_sids).reshape(b, l, n * self.d_model)
    x = self.item_out(nn.relu(self.item_in(x)))
    # Histories are left-aligned, so position 0 is the oldest kept item.
    x = x + self.position_embedding[:l].astype(self.dtype)
    x = self.drop(x, deterministic=deterministic)
    bias = jnp.where(hist_mask[:, None, None, :], 0.0, layers.NEG_INF)  # [B, 1(H), 1(Q), L]
    for blk in self.enc_blocks:
      x = blk(x, bias, deterministic)
    return (self.final_ln if self.shared_final_ln else self.enc_ln)(x)

  def decoder_inputs(self, codes, known, deterministic):
    """codes, known: [B, V, N] -> the decoder's input [B, V, N, D]: a known digit's code
    embedding, else the digit's mask embedding."""
    x = jnp.where(known[..., None], self.embed_codes(codes), self.mask_embedding.astype(self.dtype))
    return self.drop(x, deterministic=deterministic)

  def self_bias(self):
    """The decoder's self-attention bias over the N digits [N, N]: none (bidirectional)."""
    return jnp.zeros((self.n_digit, self.n_digit), jnp.float32)

  def cross_memory(self, enc):
    """What cross-attention reads: the encoder output."""
    return enc

  def cross_bias(self, hist_mask):
    """Cross-attention bias [B, 1(V), 1(H), 1(Q), L]: padded history slots get no weight."""
    return jnp.where(hist_mask, 0.0, layers.NEG_INF)[:, None, None, None, :]

  def heads(self, x):
    """Decoder output [B, V, N, D] -> logits float32 [B, V, N, C]: the final LayerNorm, then
    each digit's head (its slice of the embedding table)."""
    h = (self.final_ln if self.shared_final_ln else self.dec_ln)(x)
    if not self.tie_heads:
      h = jnp.einsum("bvnd,nde->bvne", h, self.head_adapter.astype(self.dtype))
    # float32 accumulation and output also under bfloat16: beam scores are sums of these.
    return jnp.einsum("bvnd,ncd->bvnc", h, self.table(), preferred_element_type=jnp.float32)

  def decode(self, enc, hist_mask, codes, known, deterministic=True):
    """enc: [B, L, D]; codes, known: [B, V, N] -> logits float32 [B, V, N, C]."""
    x = self.decoder_inputs(codes, known, deterministic)
    self_bias, cross_bias = self.self_bias(), self.cross_bias(hist_mask)
    enc = self.cross_memory(enc)
    for blk in self.dec_blocks:
      x = blk(x, self_bias, deterministic, enc=enc, cross_bias=cross_bias)
    return self.heads(x)

  def guided_logits(self, enc, hist_mask):
    """The all-masked pass whose confidences guided masking reads: logits [B, 1, N, C]
    without dropout."""
    b, n = enc.shape[0], self.n_digit
    return self.decode(enc, hist_mask, jnp.zeros((b, 1, n), jnp.int32),
                       jnp.zeros((b, 1, n), bool), deterministic=True)

  def example_inputs(self):
    """Inputs of the right shapes for `init` (one row, one view)."""
    n, l = self.n_digit, self.max_history_len
    return (jnp.zeros((1, l, n), jnp.int32), jnp.ones((1, l), bool),
            jnp.zeros((1, 1, n), jnp.int32), jnp.zeros((1, 1, n), bool))

  def __call__(self, hist_sids, hist_mask, codes, known, deterministic=True):
    """Full forward pass (used for init): [B, V, N, C] logits."""
    enc = self.encode(hist_sids, hist_mask, deterministic)
    return self.decode(enc, hist_mask, codes, known, deterministic)


class Autoregressive(DiffGRM):
  """The left-to-right baseline: the same encoder–decoder under a causal mask."""

  kind: ClassVar[str] = "autoregressive"

  def _decoder_input_params(self, param):
    self.bos_embedding = param("bos_embedding", ("embed",), (self.d_model,))

  def decoder_inputs(self, codes, known, deterministic):
    """[BOS, s0, .., s_{N-2}] [B, V, N, D]: position n sees the digits before n."""
    emb = self.embed_codes(codes)
    bos = jnp.broadcast_to(self.bos_embedding.astype(self.dtype), emb[..., :1, :].shape)
    return self.drop(jnp.concatenate([bos, emb[..., :-1, :]], axis=-2),
                     deterministic=deterministic)

  def self_bias(self):
    causal = jnp.tril(jnp.ones((self.n_digit, self.n_digit), bool))
    return jnp.where(causal, 0.0, layers.NEG_INF)
