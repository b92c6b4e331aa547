"""Masked views of a target SID for training (docs/method.md, Masking), built inside the jitted step.

Every strategy returns a boolean mask `[B, V, N]` (True = digit masked, i.e. to be
predicted) built as a `vmap` over one PRNG key per row, so the masks of a row do not
depend on how the batch is sharded or which other rows share it.

- `random`: digit masked with probability p_v (view v's probability, default
  `mask_prob`); view 0 all-masked when `force_all_masked`; a view with no masked digit
  gets one, chosen uniformly.
- `sequential`: one random digit order per row; view v reveals the first v digits of
  it (view 0 all-masked). Needs V == N.
- `prefix`: view v reveals digits 0..v-1 (view 0 all-masked): the left-to-right
  conditionals only, the ones left-to-right decoding reads (an ablation: DIFF_GRM's
  masked decoder trained for one fill order, as the autoregressive baseline is). V == N.
- `guided`: view t (t = 1..N) masks the t least-confident digits of the row, from a
  confidence `[B, N]` given by the caller (an all-masked pass). Needs V == N; views
  are nested and the last one is all-masked.
"""

import jax
import jax.numpy as jnp

from diffgrm_jax.runtime.cli import ConfigError
from diffgrm_jax.runtime.cli import check_choice

STRATEGIES = ("random", "sequential", "prefix", "guided")
# guided: the confidence pass with cross-attention keys/values projected as in training, or
# as the released code computes it (release/model.py).
GUIDED_PASSES = ("projected", "release")


def _random_views(key, n_digit, probs, force_all_masked):
  """One row: [V, N] masks; probs: float [V]."""
  k_mask, k_fix = jax.random.split(key)
  v = probs.shape[0]
  masked = jax.random.uniform(k_mask, (v, n_digit)) < probs[:, None]
  if force_all_masked:
    masked = masked.at[0].set(True)
  # A view that masks nothing teaches nothing: mask one digit, chosen uniformly.
  fix = jax.nn.one_hot(jax.random.randint(k_fix, (v,), 0, n_digit), n_digit, dtype=bool)
  return jnp.where(masked.any(axis=-1, keepdims=True), masked, fix)


def _sequential_views(key, n_digit):
  """One row: view v masks every digit except the first v of a random order."""
  order_rank = jnp.argsort(jax.random.permutation(key, n_digit))  # rank of each digit
  v = jnp.arange(n_digit)[:, None]
  return order_rank[None, :] >= v


def guided_views(confidence):
  """confidence: [B, N] -> masks [B, N(views), N]; view t masks the t+1 least-confident digits."""
  n = confidence.shape[-1]
  rank = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)  # 0 = least confident
  return rank[:, None, :] <= jnp.arange(n)[None, :, None]


def make_masks(key, batch_size, n_digit, *, strategy, augment_factor, mask_prob=0.5,
               view_probs=(), force_all_masked=True, confidence=None):
  """Returns bool [batch_size, V, n_digit] masks (True = masked) for one batch.

  Row i's masks depend only on `fold_in(key, i)`, never on the rest of the batch.
  """
  if strategy == "guided":
    assert confidence is not None, "guided masking needs the all-masked pass's confidence"
    return guided_views(confidence)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch_size))
  if strategy == "random":
    probs = jnp.asarray(view_probs if view_probs else (mask_prob,) * augment_factor,
                        jnp.float32)
    return jax.vmap(lambda k: _random_views(k, n_digit, probs, force_all_masked))(keys)
  if strategy == "sequential":
    return jax.vmap(lambda k: _sequential_views(k, n_digit))(keys)
  if strategy == "prefix":
    views = jnp.arange(n_digit)[None, :] >= jnp.arange(n_digit)[:, None]  # [V, N]
    return jnp.broadcast_to(views, (batch_size, n_digit, n_digit))
  check_choice("masking.strategy", strategy, STRATEGIES)


def masked_count(strategy, n_digit):
  """Masked digits per row, summed over views, when the strategy fixes it (else None).

  guided, sequential and prefix make N views masking N, N - 1, ..., 1 digits in some
  order: N (N + 1) / 2 in all. Training computes the decoder's last block at those
  positions only (`model/masked_rows.py`).
  """
  if strategy in ("guided", "sequential", "prefix"):
    return n_digit * (n_digit + 1) // 2
  return None


def masked_rows(masked, count):
  """masked: bool [B, V, N] with exactly `count` True per row -> int [B, count], the
  flattened positions v * N + n of the masked digits, in increasing order."""
  flat = masked.reshape(masked.shape[0], -1)
  return jnp.argsort(~flat, axis=-1, stable=True)[:, :count].astype(jnp.int32)


def check_config(config):
  """The `masking` section's values that cannot work (one-line `ConfigError` naming the field)."""
  k, n = config.masking, config.sid.n_digit
  check_choice("masking.strategy", k.strategy, STRATEGIES)
  if k.strategy in ("guided", "sequential", "prefix") and k.augment_factor != n:
    raise ConfigError(
        f"masking.augment_factor={k.augment_factor}: the {k.strategy} strategy makes one view "
        f"per digit, so it must equal sid.n_digit={n}")
  if k.view_probs and len(k.view_probs) != k.augment_factor:
    raise ConfigError(f"masking.view_probs has {len(k.view_probs)} entries but "
                      f"masking.augment_factor={k.augment_factor}")
  if not 0.0 < k.mask_prob <= 1.0:
    raise ConfigError(f"masking.mask_prob={k.mask_prob}: must be in (0, 1]")
  check_choice("masking.guided_pass", k.guided_pass, GUIDED_PASSES)
