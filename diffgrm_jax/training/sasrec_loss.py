"""SASRec's training objective: next-item cross-entropy at every position of a sequence.

A training row is one user's sequence without the validation and test targets: the state
at position t predicts the item at t + 1 (`data.pipeline.SequenceLoader`). Two losses
(`model.sasrec_loss`):

  'softmax'          full softmax cross-entropy over every item;
  'sampled_softmax'  softmax over the target and `model.sasrec_negatives` items drawn
                     uniformly with replacement (a draw may hit the target, left as is, as
                     the implementation behind the published numbers does).

The negatives are drawn per sequence and shared by its positions
(`model.sasrec_negatives_per='sequence'`), or per position ('position', as that
implementation draws them). Per sequence is 7 times faster on CPU (13 vs 96 ms for the
loss and its gradient at batch 128, 8 positions, 256 negatives, 12,101 items): per
position gathers [B, L, M, D] item vectors and scatters their gradient back.

Both return (numerator, denominator) sums, as the other kinds' `loss_terms`, so
micro-batches add up.
"""

import jax
import jax.numpy as jnp
import optax

from diffgrm_jax.runtime.cli import ConfigError
from diffgrm_jax.runtime.cli import check_choice

LOSSES = ("sampled_softmax", "softmax")
NEGATIVES_PER = ("sequence", "position")


def full_softmax_terms(states, table, targets, weights):
  """states [B, L, D], table [I, D] (row 0 = padding, never a class), targets int [B, L]
  (0 = no target), weights [B] -> (sum of CE over real targets, their count)."""
  logits = jnp.einsum("bld,id->bli", states, table, preferred_element_type=jnp.float32)
  logits = logits.at[..., 0].set(-jnp.inf)
  # Positions without a target read class 1 (any real class), then weigh 0: no infinities.
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(targets, 1))
  w = (targets > 0) * weights[:, None]
  return (jnp.where(w > 0, ce, 0.0) * w).sum(), w.sum()


def sampled_softmax_terms(states, table, targets, negatives, weights):
  """As `full_softmax_terms` over the target and `negatives` only: int [B, L, M] (per
  position) or [B, M] (per sequence, shared by its positions). Class 0 is the target,
  classes 1..M the negatives (repeats, and the target itself, allowed)."""
  pos = jnp.einsum("bld,bld->bl", states, table[targets], preferred_element_type=jnp.float32)
  spec = "bld,bmd->blm" if negatives.ndim == 2 else "bld,blmd->blm"
  neg = jnp.einsum(spec, states, table[negatives], preferred_element_type=jnp.float32)
  logits = jnp.concatenate([pos[..., None], neg], axis=-1)
  ce = jax.nn.logsumexp(logits, axis=-1) - pos
  w = (targets > 0) * weights[:, None]
  return (jnp.where(w > 0, ce, 0.0) * w).sum(), w.sum()


def loss_terms(params, model, batch, key, config, train=True):
  """(numerator, denominator) of a batch {'items', 'targets' int32 [B, L], 'weight' [B]}."""
  k_drop, k_neg = jax.random.split(key)
  items, variables, rngs = batch["items"], {"params": params}, {"dropout": k_drop}
  # One dropped table per step, read by the inputs and scored against (model/sasrec.py).
  table = model.apply(variables, not train, rngs=rngs, method="item_table")
  states = model.apply(variables, items, items > 0, deterministic=not train, table=table,
                       rngs=rngs)
  m = config.model
  if m.sasrec_loss == "softmax":
    return full_softmax_terms(states, table, batch["targets"], batch["weight"])
  shape = items.shape[:1] if m.sasrec_negatives_per == "sequence" else items.shape
  negatives = jax.random.randint(k_neg, shape + (int(m.sasrec_negatives),), 1,
                                 model.n_items + 1)
  return sampled_softmax_terms(states, table, batch["targets"], negatives, batch["weight"])


def check_config(config):
  m = config.model
  check_choice("model.sasrec_loss", m.sasrec_loss, LOSSES)
  check_choice("model.sasrec_negatives_per", m.sasrec_negatives_per, NEGATIVES_PER)
  if int(m.sasrec_negatives) < 1:
    raise ConfigError(f"model.sasrec_negatives={m.sasrec_negatives}: must be >= 1")
