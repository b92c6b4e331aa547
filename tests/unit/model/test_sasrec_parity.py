"""Weight-level parity with RecTools' SASRec (0.13, the implementation behind the published
SASRec+SS numbers configs/sasrec.py follows).

tests/support/parity/rectools_sasrec_small.npz holds outputs of RecTools' own torch model,
recorded by tests/support/parity/make_rectools_fixture.py (2 blocks, 2 heads, width 16,
histories of 1 to 10 items left-padded to 10, dropout off), with its weights converted to
our layout. RecTools attends to the left padding (no key padding mask); with
`sasrec_padding_keys` ours must reproduce its states, full-catalogue scores, sampled-softmax
loss and gradients; without it, only the full-length histories, where there is no padding.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from support.parity.parity_check import rel_diff, tree_of
from diffgrm_jax.model.sasrec import SASRec
from diffgrm_jax.training.sasrec_loss import sampled_softmax_terms

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "support", "parity",
                       "rectools_sasrec_small.npz")
RTOL = 2e-5  # of the largest magnitude of RecTools' array (float32)


@pytest.fixture(scope="module")
def fx():
  with np.load(FIXTURE) as f:
    return {k: f[k] for k in f.files}


def _model(fx, padding_keys):
  n_rows, d = fx["params/item_embedding"].shape
  return SASRec(n_items=n_rows - 1, max_history_len=fx["items"].shape[1], d_model=d,
                n_heads=2, n_enc_layers=2, sasrec_padding_keys=padding_keys)


def _close(ours, ref):
  assert np.shape(ours) == np.shape(ref)
  return rel_diff(ours, ref)[1] <= RTOL


def _loss(params, model, fx):
  table = model.apply({"params": params}, True, method="item_table")
  states = model.apply({"params": params}, fx["items"], fx["items"] > 0, deterministic=True,
                       table=table)
  num, den = sampled_softmax_terms(states, table, fx["targets"], fx["negatives"],
                                   jnp.ones(fx["items"].shape[0]))
  return num / den


def test_states_scores_loss_and_gradients_equal_rectools_with_padding_keys(fx):
  model, params = _model(fx, True), tree_of(fx, "params/")
  mask = fx["items"] > 0
  states = np.asarray(model.apply({"params": params}, fx["items"], mask))
  assert _close(np.where(mask[..., None], states, 0.0), fx["states"])
  scores = np.asarray(model.apply({"params": params}, fx["items"], mask, method="score_last"))
  assert _close(scores[:, 1:], fx["scores_last"][:, 1:])  # item 0 is padding (-inf here)
  loss, grads = jax.value_and_grad(_loss)(params, model, fx)
  np.testing.assert_allclose(float(loss), float(fx["loss"]), rtol=1e-6)
  ref_grads = traverse_util.flatten_dict(tree_of(fx, "grad/"), sep="/")
  ours = traverse_util.flatten_dict(grads, sep="/")
  assert sorted(ours) == sorted(ref_grads)
  for name, g in ours.items():
    if name.endswith("key/bias"):
      # Softmax is invariant to a shift shared by every key: the key bias's gradient is
      # zero in exact arithmetic, float32 rounding in both (RecTools' is ~1e-9).
      assert np.abs(np.asarray(g)).max() < 1e-6 and np.abs(ref_grads[name]).max() < 1e-6
      continue
    if name == "item_embedding":  # row 0 (padding) is RecTools' padding_idx: never updated
      g, ref = g[1:], ref_grads[name][1:]
    else:
      ref = ref_grads[name]
    assert _close(g, ref), name


def test_without_padding_keys_only_the_full_histories_agree(fx):
  model, params = _model(fx, False), tree_of(fx, "params/")
  mask = fx["items"] > 0
  states = np.asarray(model.apply({"params": params}, fx["items"], mask))
  full = mask.all(-1)
  assert full.any() and not full.all()
  assert _close(states[full], fx["states"][full])
  # The shorter histories differ: RecTools' queries also attend to the left padding.
  diff = np.abs(np.where(mask[..., None], states - fx["states"], 0.0)).max(axis=(1, 2))
  assert np.all(diff[~full] > 1e-3)
