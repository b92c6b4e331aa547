"""Loss semantics and the sharded step: masked digits only, same numbers on 1 and 8 devices."""

import json
import re
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from support.configs import ROOT, tiny_config
from support.tiny import random_batch, train_random_steps
from diffgrm_jax.model import factory as model_lib
from diffgrm_jax.runtime import sharding as shard_lib
from diffgrm_jax.runtime.cli import ConfigError
from diffgrm_jax.training import step as step_lib


def test_loss_counts_only_masked_digits(config):
  model = model_lib.from_config(config)
  rng = np.random.default_rng(0)
  batch = random_batch(rng)
  variables = jax.jit(model.init)(jax.random.key(0), batch["hist_sids"], batch["hist_mask"],
                                  batch["target_sid"][:, None], np.zeros((16, 1, 4), bool))
  params = variables["params"]
  masked = rng.random((16, 4, 4)) < 0.5
  masked[:, :, 0] = True
  codes = np.broadcast_to(batch["target_sid"][:, None], masked.shape)

  def loss(params, labels, reduction):
    enc = model.apply({"params": params}, batch["hist_sids"], batch["hist_mask"],
                      method="encode")
    logits = model.apply({"params": params}, enc, batch["hist_mask"], codes, ~masked,
                         method="decode")
    tok = step_lib.token_losses(logits, labels, 0.1)
    return step_lib.reduce_loss(tok, jnp.asarray(masked), jnp.asarray(batch["weight"]), reduction)

  # Change the label of digit 3 wherever no view of the row masks it.
  never_masked = ~masked[:, :, 3].any(1)
  assert never_masked.any()
  labels2 = batch["target_sid"].copy()
  labels2[never_masked, 3] = (labels2[never_masked, 3] + 1) % 16
  # Jitted: one compile instead of dispatching every op of the model one by one.
  loss_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=2)
  for reduction in ("pooled", "view_mean"):
    l1, g1 = loss_and_grad(params, batch["target_sid"], reduction)
    l2, g2 = loss_and_grad(params, labels2, reduction)
    assert float(l1) == float(l2)
    jax.tree.map(np.testing.assert_array_equal, g1, g2)
  # ... while changing a masked digit's label does change it.
  labels3 = batch["target_sid"].copy()
  labels3[:, 0] = (labels3[:, 0] + 1) % 16
  assert (float(loss_and_grad(params, labels3, "pooled")[0])
          != float(loss_and_grad(params, batch["target_sid"], "pooled")[0]))


@pytest.mark.parametrize("strategy,reduction", [("guided", "pooled"), ("sequential", "view_mean")])
def test_last_block_at_masked_digits_gives_the_full_loss_and_gradient(monkeypatch, strategy,
                                                                    reduction):
  """With `train.masked_last_block` training computes the last decoder block at the masked
  digits only; the loss and gradient equal those of the full decoder."""
  config = tiny_config(**{"masking.strategy": strategy, "masking.reduction": reduction,
                          "train.masked_last_block": True})
  model = model_lib.from_config(config)
  batch = random_batch(np.random.default_rng(0))
  params = jax.jit(model.init)(jax.random.key(0), batch["hist_sids"], batch["hist_mask"],
                               batch["target_sid"][:, None], np.zeros((16, 1, 4), bool))["params"]
  calls = []
  rows_of = step_lib.masking.masked_rows
  monkeypatch.setattr(step_lib.masking, "masked_rows", lambda *a: calls.append(1) or rows_of(*a))
  # Jitted (a new function each time, so each config is traced): one compile per variant
  # instead of dispatching every op of the model's backward pass one by one.
  value_and_grad = lambda: jax.jit(lambda p: jax.value_and_grad(step_lib.loss_fn)(
      p, model, batch, jax.random.key(1), config, train=False))(params)
  part_loss, part_grads = value_and_grad()
  assert calls  # the restricted pass ran
  config.train.masked_last_block = False
  full_loss, full_grads = value_and_grad()
  assert len(calls) == 1
  np.testing.assert_allclose(float(part_loss), float(full_loss), rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
               part_grads, full_grads)


def test_reductions_by_hand():
  tok = jnp.array([[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]])  # [1, 2 views, 4]
  masked = jnp.array([[[True, False, False, False], [True, True, True, True]]])
  w = jnp.ones(1)
  # pooled: (1 + 5+6+7+8) / 5 masked tokens; view_mean: (1 + 26/4) / 2.
  np.testing.assert_allclose(step_lib.reduce_loss(tok, masked, w, "pooled"), 27 / 5)
  np.testing.assert_allclose(step_lib.reduce_loss(tok, masked, w, "view_mean"), (1 + 6.5) / 2)
  # A weight-0 (padding) row changes nothing.
  tok2 = jnp.concatenate([tok, 100 * jnp.ones_like(tok)])
  masked2 = jnp.concatenate([masked, masked])
  w2 = jnp.array([1.0, 0.0])
  np.testing.assert_allclose(step_lib.reduce_loss(tok2, masked2, w2, "view_mean"), 7.5 / 2)
  np.testing.assert_allclose(step_lib.reduce_loss(tok2, masked2, w2, "pooled"), 27 / 5)


def test_schedule_warmup_then_cosine_to_zero(config):
  config.optim.warmup_steps = 10
  _, schedule = step_lib.make_optimizer(config, 100)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(5)), config.optim.lr / 2, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), config.optim.lr, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(100)), 0.0, atol=1e-9)


def run_losses(config, n_steps=3):
  """Losses of a few train steps on random batches (any device count / mesh)."""
  return train_random_steps(config, shard_lib.make_mesh(config), n_steps)[0]


_MULTI = r"""
import json, sys
sys.path[:0] = sys.argv[1:3]
from test_train_step import run_losses
from support.configs import tiny_config
out = {}
# Data and fsdp axes at once, with the default guided masking and two decoder layers;
# (2, 4) and (2, 2, 2) train in test_sharding.py (random masking, one layer), data
# parallelism across processes in test_multihost.py.
for shape in [(4, 2)]:
  out[str(shape)] = run_losses(tiny_config(**{"mesh.shape": shape}))
print("JSON" + json.dumps(out))
"""


def test_one_device_and_eight_fake_devices_agree():
  single = run_losses(tiny_config())
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="0")
  res = subprocess.run([sys.executable, "-c", _MULTI, os.path.join(ROOT, "tests"),
                        os.path.dirname(os.path.abspath(__file__))], env=env,
                       capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stderr[-3000:]
  # No sharding XLA could only convert by gathering everything (as in test_sharding.py).
  assert "rematerializ" not in res.stderr.lower(), res.stderr[-3000:]
  multi = json.loads(res.stdout.split("JSON", 1)[1])
  for shape, losses in multi.items():
    np.testing.assert_allclose(losses, single, rtol=2e-5, err_msg=shape)
  assert single[0] != single[-1]  # the steps really updated something


def test_prng_impl_changes_draws_not_reproducibility_or_init():
  base = tiny_config()
  # The default is JAX's default key: runs recorded before the field existed stay exact.
  assert jax.random.key_impl(step_lib.step_key(base)) == jax.random.key_impl(jax.random.key(0))
  np.testing.assert_array_equal(jax.random.key_data(step_lib.step_key(base)),
                                jax.random.key_data(jax.random.key(base.seed)))
  rbg = tiny_config(**{"train.prng_impl": "unsafe_rbg"})
  mesh = shard_lib.make_mesh(rbg)
  a, _ = train_random_steps(rbg, mesh, 2)
  b, _ = train_random_steps(rbg, mesh, 2)
  assert a == b  # the step key is a function of (seed, step) alone
  default, _ = train_random_steps(base, shard_lib.make_mesh(base), 2)
  assert default[0] != a[0]  # other dropout / masks draws
  _, state0 = train_random_steps(base, mesh, 0)
  _, state0_rbg = train_random_steps(rbg, mesh, 0)
  for x, y in zip(jax.tree.leaves(state0.params), jax.tree.leaves(state0_rbg.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # init does not depend on it
  with pytest.raises(ConfigError, match="train.prng_impl"):
    step_lib.check_config(tiny_config(**{"train.prng_impl": "philox"}))


def test_one_program_step_trains_as_the_two_program_step():
  """`train.step_programs=1` (the accelerators' default) computes the same step as the two
  programs of CPU. Not bitwise: XLA may fuse the gradient's last operations with the update
  inside one program, which reorders float sums (differences of order 1e-7)."""
  split = tiny_config(**{"model.n_dec_layers": 1, "train.step_programs": 2})
  fused = tiny_config(**{"model.n_dec_layers": 1, "train.step_programs": 1})
  mesh = shard_lib.make_mesh(split)
  a, state_a = train_random_steps(split, mesh, 3)
  b, state_b = train_random_steps(fused, mesh, 3)
  np.testing.assert_allclose(b, a, rtol=1e-5)
  assert a[0] != a[-1]
  for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-6)
  assert int(state_b.step) == 3
  assert step_lib.step_programs(tiny_config(), "cpu") == 2
  assert step_lib.step_programs(tiny_config(), "gpu") == step_lib.step_programs(
      tiny_config(), "tpu") == 1
  with pytest.raises(ConfigError, match="train.step_programs"):
    step_lib.check_config(tiny_config(**{"train.step_programs": 3}))


def test_micro_batches_give_the_whole_batch_loss_and_gradient():
  # No dropout and guided masking: the step draws nothing, so the step's slices must
  # reproduce the whole batch exactly (whatever keys each draws from). Rows without weight
  # make the slices' token counts unequal, so a mean of per-slice means would differ. One
  # decoder layer: slicing does not depend on depth, and a smaller graph compiles faster.
  batch = random_batch(np.random.default_rng(1))
  batch["weight"][[1, 5, 9, 2]] = 0.0
  key = jax.random.key(3)
  for reduction in ("pooled", "view_mean"):
    config = tiny_config(**{"model.dropout": 0.0, "model.attention_dropout": 0.0,
                            "model.n_dec_layers": 1, "masking.strategy": "guided",
                            "masking.reduction": reduction, "train.micro_batches": 4})
    model = model_lib.from_config(config)
    _, state, bs, step = _step_setup(config)
    # The train step's own gradient program, sliced 4 ways (its scan's length) ...
    global_batch = step_lib.to_global(batch, bs)
    jaxpr = str(jax.make_jaxpr(step.gradients)(state.params, state.step, global_batch))
    assert set(re.findall(r"length=(\d+)", jaxpr)) == {"4"}
    l4, g4 = step.gradients(state.params, state.step, global_batch)
    # ... against the loss of the whole batch at once.
    whole = jax.jit(lambda p, b: jax.value_and_grad(step_lib.loss_fn)(p, model, b, key, config))
    l1, g1 = whole(state.params, {k: jnp.asarray(v) for k, v in batch.items()})
    np.testing.assert_allclose(float(l4), float(l1), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g4, g1)
  with pytest.raises(ConfigError, match="train.micro_batches"):
    step_lib.check_config(tiny_config(**{"train.micro_batches": -1}))


@pytest.mark.parametrize("batch,data_parallel,platform,expected", [
    (256, 1, "cpu", 8),     # 8 slices of 32 rows
    (1024, 1, "cpu", 32),
    (256, 8, "cpu", 1),     # 32 rows per device: one slice
    (100, 1, "cpu", 2),     # 50 rows; 4 slices of 25 would be under 32
    (96, 1, "cpu", 3),      # divisors only: 3 slices of 32
    (16, 1, "cpu", 1),
    (256, 1, "gpu", 1),
    (256, 1, "tpu", 1),
])
def test_automatic_micro_batches(batch, data_parallel, platform, expected):
  config = tiny_config(**{"train.micro_batches": 0, "train.batch_size": batch})
  got = step_lib.micro_batches(config, data_parallel, platform)
  assert got == expected
  rows = batch // data_parallel
  assert rows % got == 0 and (got == 1 or rows // got >= step_lib.AUTO_SLICE_ROWS)
  assert step_lib.micro_batches(tiny_config(**{"train.micro_batches": 5}), 1, platform) == 5


@pytest.mark.parametrize("history_len,data_parallel,expected", [
    (None, 2, 4),  # 128 rows per device: 4 slices of 32
    (8, 2, 4),
    (16, 2, 8),    # longer histories: slices of 16
    (50, 2, 8),
    (50, 1, 16),
    (50, 16, 1),   # 16 rows per device: one slice
])
def test_automatic_slices_shrink_for_long_histories(history_len, data_parallel, expected):
  config = tiny_config(**{"train.micro_batches": 0, "train.batch_size": 256})
  assert step_lib.micro_batches(config, data_parallel, "cpu", history_len) == expected
  assert step_lib.micro_batches(config, data_parallel, "gpu", history_len) == 1
  fixed = tiny_config(**{"train.micro_batches": 2, "train.batch_size": 256})
  assert step_lib.micro_batches(fixed, data_parallel, "cpu", history_len) == 2


def _step_setup(config):
  """(optimizer, fresh state, batch sharding, train step)."""
  model = model_lib.from_config(config)
  mesh = shard_lib.make_mesh(config)
  tx, schedule = step_lib.make_optimizer(config, 10)
  state, shardings = step_lib.init_state(model, tx, config, mesh)
  bs = shard_lib.batch_sharding(config, mesh)
  return tx, state, bs, step_lib.make_train_step(model, tx, schedule, config, shardings, bs)


def test_optimizer_update_compiles_once_for_every_history_bucket(config):
  tx, state, bs, step = _step_setup(config)
  rng = np.random.default_rng(0)
  for length in (4, 8, 4):
    batch = step_lib.to_global(random_batch(rng, config.train.batch_size, length), bs)
    # The two programs give what one would: the update applied to this batch's gradients.
    # (The gradient program is the step's own: called here first, the step reuses it.)
    loss, grads = step.gradients(state.params, state.step, batch)
    expected_params = optax.apply_updates(
        state.params, tx.update(grads, state.opt_state, state.params)[0])
    state, metrics = step(state, batch)
    assert float(metrics["loss"]) == float(loss)
    for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected_params)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
  assert int(state.step) == 3
  assert step.gradients._cache_size() == 2  # one program per history length ...
  assert step.update._cache_size() == 1  # ... and a single optimiser step


def test_each_history_bucket_gets_its_own_automatic_slices():
  config = tiny_config(**{"train.micro_batches": 0, "train.batch_size": 64})
  _, state, bs, step = _step_setup(config)
  rng = np.random.default_rng(0)
  lengths = {}
  for length in (8, 12):
    batch = step_lib.to_global(random_batch(rng, 64, length), bs)
    jaxpr = str(jax.make_jaxpr(step.gradients)(state.params, state.step, batch))
    lengths[length] = sorted({int(n) for n in re.findall(r"length=(\d+)", jaxpr)})
  # 64 rows on one CPU device: 2 slices of 32 at history 8, 4 of 16 beyond it.
  assert lengths == {8: [2], 12: [4]}, lengths
