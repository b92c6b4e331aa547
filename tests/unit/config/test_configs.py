"""Every config file loads, passes the config checks and builds a model of the intended size."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from support.configs import ROOT, load_config_file
from diffgrm_jax import config_checks
from diffgrm_jax.model import factory as model_lib

CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not p.endswith("sasrec.py"))
SASREC_ARGS = ("beauty", "sports", "demo")
N_ITEMS = 12_101  # Beauty's items (the count only sizes SASRec's item table)


def expected_param_count(c):
  """Parameters of the architecture, counted by hand from the config (docs/method.md, Model):
  code embeddings, the item MLP, positions, mask (or BOS) embeddings, pre-LN blocks with
  bias-free q/k/v projections, final LayerNorms, and an adapter when heads are untied."""
  n, k, d, f = c.sid.n_digit, c.sid.codebook_size, c.model.d_model, c.model.n_inner
  layer_norm = 2 * d
  attention = 3 * d * d + (d * d + d)  # q, k, v without bias; output projection with bias
  mlp = (d * f + f) + (f * d + d)
  encoder_block = 2 * layer_norm + attention + mlp
  decoder_block = 3 * layer_norm + 2 * attention + mlp  # self- and cross-attention
  total = (n * k * d  # one embedding row per (digit, code), shared with the output heads
           + (n * d * d + d) + (d * d + d)  # item MLP: concatenated digits -> d -> d
           + c.data.max_history_len * d  # history positions
           + (n * d if c.model.kind == "diffgrm" else d)  # mask embeddings or BOS
           + c.model.n_enc_layers * encoder_block + c.model.n_dec_layers * decoder_block
           + (1 if c.model.shared_final_ln else 2) * layer_norm)  # final norm(s)
  if not c.model.tie_heads:
    total += n * d * d
  return total


def sasrec_param_count(c, n_items):
  """SASRec by hand (model/sasrec.py): item table (with the padding row) and positions,
  per block two LayerNorms, q/k/v/out and the two FFN layers (D x D with bias), a final
  LayerNorm."""
  d = c.model.d_model
  block = 2 * 2 * d + 4 * (d * d + d) + 2 * (d * d + d)
  return (n_items + 1) * d + c.data.max_history_len * d + c.model.n_enc_layers * block + 2 * d


def _n_params(c):
  if c.model.kind == "sasrec":
    m = model_lib.from_config(c, n_items=N_ITEMS)
    shapes = jax.eval_shape(m.init, jax.random.key(0), *m.example_inputs())
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes)))
  m = model_lib.from_config(c)
  n = c.sid.n_digit
  shapes = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 4, n), jnp.int32),
                          jnp.ones((1, 4), bool), jnp.zeros((1, 1, n), jnp.int32),
                          jnp.zeros((1, 1, n), bool))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes)))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid(name):
  c = load_config_file(name)
  config_checks.check_config(c)
  assert _n_params(c) > 0
  assert _n_params(c) == expected_param_count(c)


@pytest.mark.parametrize("arg", SASREC_ARGS)
def test_sasrec_config_is_valid_and_of_its_size(arg):
  c = load_config_file("sasrec.py", arg)
  config_checks.check_config(c)
  assert c.model.kind == "sasrec" and c.decode.exclude_history
  assert _n_params(c) == sasrec_param_count(c, N_ITEMS)
  if arg != "demo":  # the published recipe
    assert (c.model.d_model, c.model.n_enc_layers, c.model.n_heads, c.model.dropout,
            c.data.max_history_len, c.model.sasrec_negatives, c.optim.lr, c.train.epochs,
            c.train.patience) == (64, 1, 1, 0.2, 50, 256, 1e-3, 200, 50)
    assert _n_params(c) == 803_072  # as the Beauty run printed
  with pytest.raises(ValueError, match="takes ':beauty', ':sports' or ':demo'"):
    load_config_file("sasrec.py", None)


def test_sports_recipe_has_the_papers_size():
  # The paper's Sports model has about 5.6M parameters; by hand: 5,601,280 with one final
  # LayerNorm shared by encoder and decoder (the default), 512 more with two.
  c = load_config_file("sports.py")
  assert expected_param_count(c) == 5_601_280
  assert _n_params(c) == 5_601_280
  c.model.shared_final_ln = False
  assert _n_params(c) == expected_param_count(c) == 5_601_792


def test_recipes_follow_the_paper():
  sports, beauty, toys = (load_config_file(n) for n in ("sports.py", "beauty.py", "toys.py"))
  assert (sports.optim.lr, sports.masking.label_smoothing, sports.model.d_model) == (0.003, 0.1, 256)
  assert (beauty.optim.lr, beauty.masking.label_smoothing) == (0.01, 0.2)
  assert (toys.model.d_model, toys.model.n_heads, toys.masking.label_smoothing) == (1024, 8, 0.15)
  assert toys.train.eval_start_epoch == 10 and sports.train.eval_start_epoch == 20
  for c in (sports, beauty, toys):
    assert (c.train.batch_size, c.optim.warmup_steps, c.optim.weight_decay) == (1024, 10000, 0.0)
    assert (c.masking.strategy, c.decode.strategy, c.decode.valid_beam) == ("guided", "confidence", 32)
    assert c.train.checkpoint_every_epochs == 5
  cpu = load_config_file("sports.py", "cpu")
  config_checks.check_config(cpu)
  assert cpu.model.d_model == 128 and cpu.train.epochs == 2
  # Beauty's CPU variant: the same budget, Beauty's own lr and smoothing.
  beauty_cpu = load_config_file("beauty.py", "cpu")
  config_checks.check_config(beauty_cpu)
  assert (beauty_cpu.optim.lr, beauty_cpu.masking.label_smoothing) == (0.01, 0.2)
  for section in ("model", "train", "decode"):
    assert beauty_cpu[section].to_dict() == cpu[section].to_dict(), section
