"""SASRec: causal self-attention over item ids, the yardstick beside the generative models.

Shapes use B = batch (users or rows), L = history length, D = d_model, I = n_items + 1
(item 0 is padding).

  h = model.apply(params, items, mask)                          # [B, L, D], every position
  scores = model.apply(params, items, mask, method="score_last")  # [B, I], item 0 = -inf

The architecture of Kang & McAuley's SASRec as the common reimplementations build it: item
embedding plus a learned position embedding that counts from the end of the history (the
most recent item is position 0, as in left-padded implementations), dropout, then blocks of
  q = LN(x);  x = q + attention(q over keys/values x, causal);  f = LN(x);  x = f + FFN(f)
with the history's padding zeroed after each, and a final LayerNorm. The FFN is two D x D
layers with ReLU between. With `sasrec_padding_keys` every real position also attends to
max_history_len - length padding positions, as the reference implementation does (its
histories are left-padded to full length and it sets no key padding mask): their input is
zero, so each is the key and value projections' biases alone. We add them as one entry of
multiplicity n_pad (logit + log n_pad), so the result does not depend on the batch's padded
width; it gives attention a length-dependent place to put weight on nothing. Attention
dropout treats that entry as the n_pad entries it stands for (`pad_key_dropout`).
The item table is shared with the output: an item's score is the state's dot product with
its embedding. Weights are Xavier-normal (biases zero), as in the implementation whose
published numbers configs/sasrec.py follows (RecTools' SASRec; not reproduced yet:
docs/results.md); as there, the item table itself takes dropout in training
(`item_table`). With `sasrec_padding_keys` the forward pass, loss and gradients equal
RecTools' weight for weight (tests/unit/model/test_sasrec_parity.py). Its initial draw
differs in two places, which `sasrec_init='rectools'` copies: torch draws the query, key and
value projections as one fused [3D, D] Xavier matrix (standard deviation sqrt(2 / 4D)
instead of sqrt(2 / 2D) for each D x D), and leaves the FFN biases at torch's default,
uniform in +-1/sqrt(D).

Histories are left-aligned (oldest kept item at index 0, padding on the right), as
everywhere in this package; with the causal mask, position t sees items 0..t only.
"""

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffgrm_jax.model.dropout import Dropout

NEG_INF = -1e9
BLOCK_LN_EPS = 1e-5  # the blocks' LayerNorms: torch's default, as the reference implementation
FINAL_LN_EPS = 1e-8  # the final LayerNorm (the original SASRec's epsilon, kept there)


def xavier_normal():
  # torch's xavier_normal_ (untruncated), over (fan_in + fan_out) / 2 of a 2-D weight.
  return nn.initializers.variance_scaling(1.0, "fan_avg", "normal")


INITS = ("xavier", "rectools")


def fused_qkv_xavier_normal():
  # One D x D third of torch's fused [3D, D] Xavier draw: fan_in + fan_out = 4D.
  return nn.initializers.variance_scaling(0.5, "fan_avg", "normal")


def torch_linear_bias(fan_in):
  # torch.nn.Linear's default bias: uniform in +-1/sqrt(fan_in).
  bound = 1.0 / fan_in ** 0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype,
                                                                   -bound, bound)


def _dense(features, axes, name, kernel_init=None, bias_init=None):
  return nn.Dense(features, name=name,
                  kernel_init=nn.with_logical_partitioning(kernel_init or xavier_normal(),
                                                           axes),
                  bias_init=nn.with_logical_partitioning(
                      bias_init or nn.initializers.zeros_init(), (axes[-1],)))


def _layer_norm(name, epsilon=BLOCK_LN_EPS):
  return nn.LayerNorm(
      epsilon=epsilon, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))


def inverse_positions(mask):
  """mask bool [B, L] (left-aligned) -> int32 [B, L]: 0 at the last real item, counting up
  towards the oldest; 0 on padding."""
  length = mask.sum(-1, keepdims=True)
  pos = length - 1 - jnp.arange(mask.shape[-1])[None]
  return jnp.where(mask, pos, 0).astype(jnp.int32)


def pad_key_dropout(pad_weight, n_pad, rate, key):
  """Attention dropout on the padding entry of multiplicity n_pad, pad_weight [B, H, L, 1],
  n_pad int [B]: what dropout on the n_pad equal entries it stands for does, in
  distribution. Each is kept with probability 1 - rate and scaled by 1 / (1 - rate), so
  their sum is the entry times Binomial(n_pad, 1 - rate) / (n_pad (1 - rate)): mean 1, as
  dropping the one entry whole would give, but with n_pad times less variance (dropping it
  whole removes all of a short history's padding weight at once, one step in five)."""
  n = jnp.broadcast_to(n_pad[:, None, None], pad_weight.shape[:-1]).astype(jnp.float32)
  kept = jax.random.binomial(key, n, 1.0 - rate)
  factor = kept / (jnp.maximum(n, 1.0) * (1.0 - rate))
  return pad_weight * factor[..., None].astype(pad_weight.dtype)


class SasrecBlock(nn.Module):
  """One SASRec block: queries from LN(x), keys/values from x itself, residual from LN(x)."""
  d_model: int
  n_heads: int
  dropout: float
  attention_dropout: float
  dtype: Any = jnp.float32
  init: str = "xavier"  # or 'rectools' (module docstring)

  @nn.compact
  def __call__(self, x, bias, deterministic, n_pad=None):
    """x [B, L, D], bias [B, 1, L, L] (0 or NEG_INF), n_pad int [B] or None: padding
    positions every query attends to besides its real keys (module docstring)."""
    b, l, d = x.shape
    h, hd = self.n_heads, self.d_model // self.n_heads
    q_in = _layer_norm("ln_attn")(x)
    split = lambda y: y.reshape(b, -1, h, hd)
    rectools = self.init == "rectools"
    qkv = lambda name: _dense(d, ("embed", "mlp"), name,
                              fused_qkv_xavier_normal() if rectools else None)
    key, value = qkv("key"), qkv("value")
    q = split(qkv("query")(q_in)) / jnp.sqrt(hd).astype(x.dtype)
    k, v = split(key(x)), split(value(x))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + bias
    if n_pad is not None:
      # A zero input's key and value: the projections' biases, one per head.
      zero = jnp.zeros((d,), x.dtype)
      k_pad, v_pad = key(zero).reshape(h, hd), value(zero).reshape(h, hd)
      multiplicity = jnp.where(n_pad > 0, jnp.log(jnp.maximum(n_pad, 1)), NEG_INF)
      pad_logit = (jnp.einsum("bqhd,hd->bhq", q, k_pad).astype(jnp.float32)
                   + multiplicity[:, None, None])
      logits = jnp.concatenate([logits, pad_logit[..., None]], axis=-1)
      v = jnp.concatenate([v, jnp.broadcast_to(v_pad, (b, 1, h, hd))], axis=1)
    weights = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
    if n_pad is None:
      weights = Dropout(self.attention_dropout)(weights, deterministic=deterministic)
    else:
      real = Dropout(self.attention_dropout)(weights[..., :-1], deterministic=deterministic)
      pad = weights[..., -1:]
      if not deterministic and self.attention_dropout > 0:
        pad = pad_key_dropout(pad, n_pad, self.attention_dropout, self.make_rng("dropout"))
      weights = jnp.concatenate([real, pad], axis=-1)
    att = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, l, d)
    x = q_in + _dense(d, ("mlp", "embed"), "out")(att)
    f = _layer_norm("ln_ffn")(x)
    ffn_bias = torch_linear_bias(d) if rectools else None
    y = nn.relu(_dense(d, ("embed", "mlp"), "ffn_in", bias_init=ffn_bias)(f))
    y = Dropout(self.dropout)(y, deterministic=deterministic)
    y = _dense(d, ("mlp", "embed"), "ffn_out", bias_init=ffn_bias)(y)
    return f + Dropout(self.dropout)(y, deterministic=deterministic)


class SASRec(nn.Module):
  """Causal self-attention over item ids with a shared item table (module docstring)."""
  n_items: int
  max_history_len: int = 50
  d_model: int = 64
  n_heads: int = 1
  n_enc_layers: int = 1  # SASRec blocks
  dropout: float = 0.2
  attention_dropout: float = 0.2
  # Attend to the padding positions as the reference implementation does (module docstring).
  sasrec_padding_keys: bool = False
  # The initial draw: 'xavier', or 'rectools' as that implementation draws it (docstring).
  sasrec_init: str = "xavier"
  dtype: Any = jnp.float32

  kind: ClassVar[str] = "sasrec"

  def setup(self):
    param = lambda name, axes, shape: self.param(
        name, nn.with_logical_partitioning(xavier_normal(), axes), shape)
    self.item_embedding = param("item_embedding", ("vocab", "embed"),
                                (self.n_items + 1, self.d_model))
    self.position_embedding = param("position_embedding", ("pos", "embed"),
                                    (self.max_history_len, self.d_model))
    self.table_dropout = Dropout(self.dropout)
    self.embed_dropout = Dropout(self.dropout)
    self.blocks = [SasrecBlock(self.d_model, self.n_heads, self.dropout,
                               self.attention_dropout, self.dtype, self.sasrec_init,
                               name=f"block_{i}")
                   for i in range(self.n_enc_layers)]
    self.final_ln = _layer_norm("final_ln", FINAL_LN_EPS)

  def example_inputs(self):
    """Inputs of the right kinds for `init`."""
    return (jnp.ones((1, self.max_history_len), jnp.int32),
            jnp.ones((1, self.max_history_len), bool))

  def item_table(self, deterministic=True):
    """[I, D] item embeddings (row 0 = padding), the output layer as well. In training a
    dropout mask over the whole table, one per step, shared by inputs and outputs (the
    reference implementation drops its item table so; it regularises the output layer)."""
    table = jnp.asarray(self.item_embedding, self.dtype)
    return self.table_dropout(table, deterministic=deterministic)

  def __call__(self, items, mask, deterministic=True, table=None):
    """items int32 [B, L] (0 = padding), mask bool [B, L] -> states [B, L, D]: the state
    at t predicts the item after items[:, t]. `table`: the `item_table` to read (training
    passes the one it also scores with)."""
    l = items.shape[1]
    if table is None:
      table = self.item_table(deterministic)
    pad = mask[..., None].astype(self.dtype)
    x = table[items] + jnp.asarray(self.position_embedding,
                                   self.dtype)[inverse_positions(mask)]
    x = self.embed_dropout(x, deterministic=deterministic) * pad
    causal = jnp.tril(jnp.ones((l, l), bool))
    bias = jnp.where(causal[None, None] & mask[:, None, None, :], 0.0, NEG_INF)
    n_pad = (self.max_history_len - mask.sum(-1)) if self.sasrec_padding_keys else None
    for block in self.blocks:
      x = block(x, bias, deterministic, n_pad) * pad
    return self.final_ln(x)

  def score_last(self, items, mask, exclude_history=False):
    """Scores [B, I] of every item after each history (its last real position); item 0
    (padding) scores -inf, and so do the history's own items with `exclude_history`."""
    h = self(items, mask, deterministic=True)
    last = jnp.maximum(mask.sum(-1) - 1, 0)
    state = jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]
    scores = jnp.einsum("bd,id->bi", state, self.item_table(),
                        preferred_element_type=jnp.float32)
    if exclude_history:  # padding positions hold item 0, which is -inf anyway
      scores = scores.at[jnp.arange(items.shape[0])[:, None], items].set(-jnp.inf)
    return scores.at[:, 0].set(-jnp.inf)
