"""Train state, optimiser, masked loss and the sharded, jitted train step (docs/method.md, Loss).

The step's randomness (dropout, masks) is `fold_in(key(seed), step)` with the key of
`train.prng_impl`, so the RNG needs no state of its own: a run resumed at step s draws
what an uninterrupted run draws at step s, on any mesh.
"""

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from diffgrm_jax.model import masked_rows
from diffgrm_jax.runtime import compile_options
from diffgrm_jax.runtime import sharding as shard_lib
from diffgrm_jax.runtime.cli import ConfigError
from diffgrm_jax.runtime.cli import check_choice
from diffgrm_jax.training import masking
from diffgrm_jax.training import sasrec_loss


DEVICE_KEYS = ("hist_sids", "hist_mask", "target_sid", "target_item", "weight")
SEQUENCE_KEYS = ("items", "targets", "weight")  # SASRec's rows (data.pipeline.SequenceLoader)


def batch_keys(model):
  """The keys of the model's training batches that go to the devices."""
  return SEQUENCE_KEYS if model.kind == "sasrec" else DEVICE_KEYS


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


SCHEDULES = ("warmup_cosine", "constant")


def make_optimizer(config, total_steps):
  """AdamW with global-norm clipping (`optim.clip_norm`; 0: none) and the schedule
  `optim.schedule`: linear warmup from 0 then cosine decay to 0 ('warmup_cosine'), or
  `optim.lr` throughout ('constant', SASRec's recipe)."""
  o = config.optim
  total_steps = max(int(total_steps), 1)
  warmup = min(int(o.warmup_steps), total_steps)
  if o.schedule == "constant":
    schedule = optax.constant_schedule(o.lr)
  elif warmup >= total_steps:
    schedule = optax.linear_schedule(0.0, o.lr, total_steps)
  else:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, o.lr, warmup_steps=warmup, decay_steps=total_steps, end_value=0.0)
  adam = optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  clip = [optax.clip_by_global_norm(o.clip_norm)] if o.clip_norm > 0 else []
  return optax.chain(*clip, adam), schedule


def _boxed_init(model, tx, config):
  """Init function returning the state with logical-axis boxes (for shardings)."""
  def init(key):
    params = model.init(key, *model.example_inputs())["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return init


def _state_shardings(boxed_abstract, config, mesh):
  """The state's shardings: parameters by the mesh rules; the optimiser state also split
  over the data axis (`sharding.split_over_data`, ZeRO stage 1)."""
  shardings = shard_lib.logical_to_sharding(boxed_abstract, config, mesh)
  opt = shard_lib.split_over_data(shardings.opt_state, nn.meta.unbox(boxed_abstract.opt_state),
                                  mesh)
  return shardings.replace(opt_state=opt)


def init_state(model, tx, config, mesh):
  """Initialises the state directly in its sharded layout; returns (state, shardings)."""
  boxed_init = _boxed_init(model, tx, config)
  key = jax.random.key(config.seed)
  shardings = _state_shardings(jax.eval_shape(boxed_init, key), config, mesh)
  state = jax.jit(lambda k: nn.meta.unbox(boxed_init(k)), out_shardings=shardings)(key)
  return state, shardings


def abstract_state(model, tx, config, mesh):
  """(ShapeDtypeStructs with shardings, shardings) for restoring a checkpoint onto `mesh`."""
  abstract = jax.eval_shape(_boxed_init(model, tx, config), jax.random.key(0))
  shardings = _state_shardings(abstract, config, mesh)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      nn.meta.unbox(abstract), shardings), shardings


def token_losses(logits, targets, label_smoothing):
  """logits [B, V, N, C], targets [B, N] -> label-smoothed CE per token [B, V, N]."""
  c = logits.shape[-1]
  labels = optax.smooth_labels(jax.nn.one_hot(targets, c), label_smoothing)
  return optax.softmax_cross_entropy(logits, labels[:, None])


REDUCTIONS = ("pooled", "view_mean")


def loss_terms(tok, masked, weight, reduction):
  """tok, masked: [B, V, N]; weight: [B] (0 = padding row) -> (numerator, denominator).

  The loss is numerator / max(denominator, 1). Both are sums over rows, so the terms of
  micro-batches add up to those of the whole batch (`train.micro_batches`).
  'pooled': sum over every masked token / number of masked tokens.
  'view_mean': mean over a view's masked digits, then mean over views and rows.
  """
  m = masked.astype(tok.dtype) * weight[:, None, None]
  if reduction == "pooled":
    return (tok * m).sum(), m.sum()
  if reduction == "view_mean":
    per_view = (tok * m).sum(-1) / jnp.maximum(masked.sum(-1), 1)
    return per_view.sum(), weight.sum() * tok.shape[1]
  check_choice("masking.reduction", reduction, REDUCTIONS)


def loss_denominator(den):
  """The divisor of `loss_terms`' numerator: at least 1, so an all-padding batch gives 0."""
  return jnp.maximum(den, 1.0)


def reduce_loss(tok, masked, weight, reduction):
  """tok, masked: [B, V, N]; weight: [B] -> the scalar loss (see `loss_terms`)."""
  num, den = loss_terms(tok, masked, weight, reduction)
  return num / loss_denominator(den)


def views_for_batch(model, params, enc, batch, key, config):
  """Returns (codes, known, masked) [B, V, N] for the batch's target SIDs."""
  target = batch["target_sid"]
  b, n = target.shape
  if model.kind == "autoregressive":
    # Teacher forcing: one view, every digit predicted from the digits before it.
    ones = jnp.ones((b, 1, n), bool)
    return target[:, None], ones, ones
  k = config.masking
  confidence = None
  if k.strategy == "guided":
    # No-gradient all-masked pass with the training model itself, without dropout.
    logits = model.apply({"params": params}, jax.lax.stop_gradient(enc), batch["hist_mask"],
                         method="guided_logits")
    confidence = jax.lax.stop_gradient(jax.nn.softmax(logits[:, 0], -1).max(-1))
  masked = masking.make_masks(
      key, b, n, strategy=k.strategy, augment_factor=k.augment_factor, mask_prob=k.mask_prob,
      view_probs=tuple(k.view_probs), force_all_masked=k.force_all_masked,
      confidence=confidence)
  codes = jnp.broadcast_to(target[:, None], masked.shape)
  return codes, ~masked, masked


def _loss_terms_fn(params, model, batch, key, config, train=True):
  """(numerator, denominator) of the batch's loss (`loss_terms`; SASRec's:
  `sasrec_loss.loss_terms`)."""
  if model.kind == "sasrec":
    return sasrec_loss.loss_terms(params, model, batch, key, config, train)
  k_enc, k_mask, k_dec = jax.random.split(key, 3)
  variables = {"params": params}
  enc = model.apply(variables, batch["hist_sids"], batch["hist_mask"], deterministic=not train,
                    rngs={"dropout": k_enc}, method="encode")
  codes, known, masked = views_for_batch(model, params, enc, batch, k_mask, config)
  rows = None
  if config.train.masked_last_block and model.kind == "diffgrm":
    count = masking.masked_count(config.masking.strategy, masked.shape[-1])
    if count is not None and count < masked[0].size:
      rows = masking.masked_rows(masked, count)
  if rows is None:
    logits = model.apply(variables, enc, batch["hist_mask"], codes, known,
                         deterministic=not train, rngs={"dropout": k_dec}, method="decode")
  else:  # the last block at the masked digits only (model/masked_rows.py)
    logits = masked_rows.decode(model, variables, enc, batch["hist_mask"], codes, known, rows,
                                deterministic=not train, rngs={"dropout": k_dec})
  tok = token_losses(logits, batch["target_sid"], config.masking.label_smoothing)
  return loss_terms(tok, masked, batch["weight"], config.masking.reduction)


def loss_fn(params, model, batch, key, config, train=True):
  num, den = _loss_terms_fn(params, model, batch, key, config, train)
  return num / loss_denominator(den)


# `train.micro_batches = 0` on CPU: slices of at least this many rows per data-parallel
# device, small enough that a slice's activations stay in cache (faster and less memory;
# benchmarks/results/speed.md, "Micro-batches").
AUTO_SLICE_ROWS = 32
# ... and at least this many for histories longer than AUTO_LONG_HISTORY items: a slice's
# activations grow with its history (encoder, cross-attention), so longer histories take
# smaller slices to keep the step's temporary memory down.
AUTO_SLICE_ROWS_LONG = 16
AUTO_LONG_HISTORY = 8


def micro_batches(config, data_parallel=1, platform=None, history_len=None):
  """Slices per step: `train.micro_batches`.

  0 means automatic: on CPU the most slices that leave each data-parallel device at least
  `AUTO_SLICE_ROWS` rows of the batch in each (`AUTO_SLICE_ROWS_LONG` when `history_len`,
  the batch's history bucket, is above `AUTO_LONG_HISTORY`), dividing its rows evenly;
  elsewhere 1, since accelerators are fastest on the whole batch. `platform` defaults to
  JAX's backend.
  """
  n = int(config.train.micro_batches)
  if n != 0:
    return n
  if (platform or jax.default_backend()) != "cpu":
    return 1
  rows = config.train.batch_size // max(data_parallel, 1)
  least = AUTO_SLICE_ROWS
  if history_len is not None and history_len > AUTO_LONG_HISTORY:
    least = AUTO_SLICE_ROWS_LONG
  return max(m for m in range(1, max(rows, 1) + 1)
             if rows % m == 0 and (m == 1 or rows // m >= least))


def micro_batched_value_and_grad(params, model, batch, key, config, n_slices):
  """(loss, grads) of the whole batch, computed over `n_slices` slices in a `lax.scan`.

  The activations kept for the backward pass are those of one slice, so the step's
  temporary memory falls about `n_slices`-fold. The loss and its gradient equal the
  whole batch's (the numerators and denominators of `loss_terms` add up); the random
  draws differ (slice i draws from `fold_in(key, i)`), so with dropout or random masking
  it is a different, equally valid run.
  """
  def split(x):
    # Rows j * M + i form slice i, so each device's rows split evenly among the slices.
    return jnp.swapaxes(x.reshape(x.shape[0] // n_slices, n_slices, *x.shape[1:]), 0, 1)

  slices = {k: split(v) for k, v in batch.items()}
  grad_fn = jax.value_and_grad(_loss_terms_fn, has_aux=True)

  def body(carry, xs):
    i, piece = xs
    num_sum, den_sum, grad_sum = carry
    (num, den), grads = grad_fn(params, model, piece, jax.random.fold_in(key, i), config)
    return (num_sum + num, den_sum + den, jax.tree.map(jnp.add, grad_sum, grads)), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  init = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), zeros)
  (num, den, grads), _ = jax.lax.scan(body, init, (jnp.arange(n_slices), slices))
  den = loss_denominator(den)
  return num / den, jax.tree.map(lambda g: g / den, grads)


PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


def step_key(config):
  """The base key of the step's random draws, of the implementation `train.prng_impl`."""
  return jax.random.key(config.seed, impl=config.train.prng_impl)


STEP_PROGRAMS = (0, 1, 2)


def step_programs(config, platform=None):
  """Compiled programs per train step: `train.step_programs`, or for 0 two on CPU and one
  on GPU/TPU. `platform` defaults to JAX's backend."""
  n = int(config.train.step_programs)
  if n:
    return n
  return 2 if (platform or jax.default_backend()) == "cpu" else 1


class TrainStep:
  """`step(state, batch) -> (state, metrics)`; donates the state.

  Two programs (`fused` None): `gradients(params, step, batch) -> (loss, grads)`, compiled
  once per batch shape (each history bucket), then `update(state, grads, loss) -> (state,
  metrics)`, the optimiser step, which does not depend on the batch and is compiled once,
  not again for every bucket (compiling is where training's host memory peaks on CPU).
  One program (`fused`): both in one call, one dispatch per step (accelerators).
  """

  def __init__(self, gradients, update, fused=None):
    self.gradients = gradients
    self.update = update
    self.fused = fused

  def __call__(self, state, batch):
    if self.fused is not None:
      return self.fused(state, batch)
    loss, grads = self.gradients(state.params, state.step, batch)
    return self.update(state, grads, loss)


def _step_functions(model, tx, schedule, config, state_shardings, batch_sharding):
  """(gradients, update, fused): the train step's pieces, shared by the one-step programs
  and the multi-step call."""
  base_key = step_key(config)
  data_parallel = shard_lib.data_parallel_size(config, batch_sharding.mesh)
  keys = batch_keys(model)

  def gradients(params, step, batch):
    key = jax.random.fold_in(base_key, step)
    # Traced once per history bucket, so each bucket gets its own slice count.
    n_micro = micro_batches(config, data_parallel, history_len=batch[keys[0]].shape[1])
    if n_micro > 1:
      return micro_batched_value_and_grad(params, model, batch, key, config, n_micro)
    return jax.value_and_grad(loss_fn)(params, model, batch, key, config)

  def update(state, grads, loss):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def fused(state, batch):
    loss, grads = gradients(state.params, state.step, batch)
    # As the two programs.
    grads = jax.lax.with_sharding_constraint(grads, state_shardings.params)
    return update(state, grads, loss)

  return gradients, update, fused


def make_train_step(model, tx, schedule, config, state_shardings, batch_sharding):
  """Returns the `TrainStep` of this model, optimiser and config on the state's shardings."""
  replicated = shard_lib.replicated(batch_sharding.mesh)
  gradients, update, fused = _step_functions(model, tx, schedule, config, state_shardings,
                                             batch_sharding)
  batch_shardings = {k: batch_sharding for k in batch_keys(model)}
  params_shardings = state_shardings.params

  # Gradients leave the first program laid out as the parameters (split over the data axis
  # there, GSPMD would carry that layout back into the activations of fsdp / tensor meshes
  # and gather them whole). The update program takes each device's share (a local slice).
  return TrainStep(
      jax.jit(gradients, in_shardings=(params_shardings, state_shardings.step, batch_shardings),
              out_shardings=(replicated, params_shardings),
              compiler_options=compile_options.options("train")),
      jax.jit(update, in_shardings=(state_shardings, params_shardings, replicated),
              out_shardings=(state_shardings, replicated), donate_argnums=(0,)),
      None if step_programs(config) == 2 else jax.jit(
          fused, in_shardings=(state_shardings, batch_shardings),
          out_shardings=(state_shardings, replicated), donate_argnums=(0,),
          compiler_options=compile_options.options("train")))


# Batch keys with a history axis (axis 1): what a length bucket pads.
HISTORY_KEYS = ("hist_sids", "hist_mask", "items", "targets")


def make_multi_step(model, tx, schedule, config, state_shardings, batch_sharding, edges):
  """`train.steps_per_call`: `fn(state, batches, buckets) -> (state, metrics)` runs n
  steps in one jitted call, a `lax.scan` over the n batches (`stack_batches`: every key
  [n, B, ...], histories padded to the longest bucket) with one branch per length bucket
  (`lax.switch` on `buckets` int32 [n], indices into `edges`): each branch cuts the
  histories back to its bucket, so a step computes exactly what the one-step program
  computes for that batch (the same rows, order and random numbers: the key is the step's).
  metrics: each [n]. Donates the state; compiled once per n."""
  _, _, fused = _step_functions(model, tx, schedule, config, state_shardings, batch_sharding)
  keys = batch_keys(model)

  def one_step(lb, state, batch):
    return fused(state, {k: v[:, :lb] if k in HISTORY_KEYS else v for k, v in batch.items()})

  branches = [functools.partial(one_step, int(lb)) for lb in edges]

  def multi(state, batches, buckets):
    def body(state, xs):
      batch, b = xs
      return jax.lax.switch(b, branches, state, batch)
    return jax.lax.scan(body, state, (batches, buckets))

  stacked = stacked_sharding(batch_sharding)
  return jax.jit(multi, in_shardings=(state_shardings, {k: stacked for k in keys},
                                      shard_lib.replicated(batch_sharding.mesh)),
                 out_shardings=(state_shardings, shard_lib.replicated(batch_sharding.mesh)),
                 donate_argnums=(0,), compiler_options=compile_options.options("train"))


def stacked_sharding(batch_sharding):
  """The sharding of n batches stacked on a leading axis: that axis whole, the batch split."""
  return jax.sharding.NamedSharding(batch_sharding.mesh,
                                    jax.sharding.PartitionSpec(None, *batch_sharding.spec))


def stack_batches(batches, batch_sharding, keys, width):
  """Process-local numpy batches -> global arrays [n, B, ...] of `keys`, histories padded
  with zeros to `width` (padding is what a bucket's own padding is: item 0, mask False)."""
  def pad(k, x):
    if k not in HISTORY_KEYS or x.shape[1] == width:
      return x
    return np.pad(x, [(0, 0), (0, width - x.shape[1])] + [(0, 0)] * (x.ndim - 2))
  sharding = stacked_sharding(batch_sharding)
  return {k: jax.make_array_from_process_local_data(
      sharding, np.stack([pad(k, np.asarray(b[k])) for b in batches])) for k in keys}


def to_global(batch, batch_sharding, keys=DEVICE_KEYS):
  """Process-local numpy batch -> global jax arrays (of `keys`) split over the data axes."""
  return {k: jax.make_array_from_process_local_data(batch_sharding, batch[k]) for k in keys}




def check_config(config):
  """Loss and optimiser values that cannot work (one-line `ConfigError` naming the field)."""
  check_choice("masking.reduction", config.masking.reduction, REDUCTIONS)
  check_choice("train.prng_impl", config.train.prng_impl, PRNG_IMPLS)
  check_choice("optim.schedule", config.optim.schedule, SCHEDULES)
  check_choice("train.step_programs", config.train.step_programs, STEP_PROGRAMS)
  if int(config.train.steps_per_call) < 1:
    raise ConfigError(f"train.steps_per_call={config.train.steps_per_call}: must be >= 1")
  if int(config.train.micro_batches) < 0:
    raise ConfigError(f"train.micro_batches={config.train.micro_batches}: must be >= 1, or 0 "
                      "for automatic")
