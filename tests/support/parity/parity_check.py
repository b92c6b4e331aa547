"""Our outputs on a recorded release fixture, and their differences from the release's.

Used by tests/unit/release/test_parity.py; also a script that prints the differences for any fixture
made by make_release_fixture.py (e.g. the paper-size one, which is not committed):

  python tests/support/parity/parity_check.py /tmp/release_sports.npz
"""

import ast
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from diffgrm_jax import defaults
from diffgrm_jax.decoding import decoders
from diffgrm_jax.decoding import settings as decoding
from diffgrm_jax.release.model import ReleaseDiffGRM
from diffgrm_jax.sid import catalogue as catalogue_lib
from diffgrm_jax.training import step as train_step

HERE = os.path.dirname(os.path.abspath(__file__))
SMALL_FIXTURE = os.path.join(HERE, "release_small.npz")


def load_fixture(path=SMALL_FIXTURE):
  with np.load(path) as f:
    fx = {k: f[k] for k in f.files}
  fx["config"] = ast.literal_eval(str(fx["config"]))
  return fx


def tree_of(fx, prefix):
  """The arrays of `fx` named `prefix<a>/<b>/...`, as a nested dict of jnp arrays."""
  tree = {}
  for k, v in fx.items():
    if k.startswith(prefix):
      node = tree
      *parents, leaf = k[len(prefix):].split("/")
      for part in parents:
        node = node.setdefault(part, {})
      node[leaf] = jnp.asarray(v)
  return tree


def params_of(fx):
  return tree_of(fx, "params/")


def release_model(fx, **overrides):
  """Our model with the options that reproduce the release (docs/release_parity.md)."""
  c = fx["config"]
  kw = dict(n_digit=c["n_digit"], codebook_size=c["codebook"], d_model=c["d"],
            n_heads=c["heads"], n_enc_layers=c["enc"], n_dec_layers=c["dec"],
            n_inner=c["inner"], dropout=0.0, max_history_len=c["max_history_len"],
            tie_heads=True, mask_cross_attention=False, project_guided_pass=False,
            shared_final_ln=True, attention_dropout=0.0)
  kw.update(overrides)
  return ReleaseDiffGRM(**kw)


def masking_config(fx, guided_pass="release"):
  """The training config of the fixture: guided masking, pooled loss, the whole last block
  (as the release computes it)."""
  c = defaults.get_config()
  c.masking.strategy, c.masking.augment_factor = "guided", fx["config"]["n_digit"]
  c.masking.reduction, c.masking.guided_pass = "pooled", guided_pass
  c.masking.label_smoothing = fx["config"]["label_smoothing"]
  c.train.masked_last_block = False
  return c


def batch_of(fx, rows=None, length=None):
  """The fixture's histories in our layout (padding codes 0), optionally a subset of rows
  and fewer history slots (a shorter length bucket)."""
  rows = np.arange(len(fx["hist"])) if rows is None else np.asarray(rows)
  length = fx["hist"].shape[1] if length is None else length
  mask = fx["hist_mask"][rows, :length]
  hist = np.where(mask[..., None], fx["hist"][rows, :length], 0)
  return {"hist_sids": jnp.asarray(hist, jnp.int32), "hist_mask": jnp.asarray(mask),
          "target_sid": jnp.asarray(fx["target"][rows], jnp.int32),
          "weight": jnp.ones(len(rows), jnp.float32)}


def logits_of(model, params, fx, batch, project_cross_kv=True, rows=None):
  """(encoder output, logits [B, P, N, C]) for the fixture's known-digit patterns;
  `project_cross_kv=False`: the release's unprojected cross-attention (its guided pass)."""
  rows = np.arange(len(fx["hist"])) if rows is None else np.asarray(rows)

  @jax.jit
  def run(params, hist, mask, codes, known):
    v = {"params": params}
    enc = model.apply(v, hist, mask, method="encode")
    method = "decode" if project_cross_kv else "decode_unprojected"
    return enc, model.apply(v, enc, mask, codes, known, method=method)
  return run(params, batch["hist_sids"], batch["hist_mask"], jnp.asarray(fx["codes"][rows]),
             jnp.asarray(fx["known"][rows]))


def guided_views(model, params, enc, batch, config):
  """The guided training views [B, N, N] our training step builds (True = masked); the
  guided pass is the one `config` names (masking.guided_pass)."""
  model = model.clone(project_guided_pass=config.masking.guided_pass == "projected")
  fn = lambda p, e, b: train_step.views_for_batch(model, p, e, b, jax.random.key(0), config)[2]
  return jax.jit(fn)(params, enc, batch)


def our_outputs(fx, model=None, params=None):
  """Everything the fixture records, computed by diffgrm_jax."""
  model = model or release_model(fx)
  params = params_of(fx) if params is None else params
  batch = batch_of(fx)
  enc, logits = logits_of(model, params, fx, batch)
  _, logits_noproj = logits_of(model, params, fx, batch, project_cross_kv=False)
  config = masking_config(fx)
  masked = guided_views(model, params, enc, batch, config)
  # train=False: no dropout (the key is then unused by guided masking).
  loss_fn = lambda p, b: train_step.loss_fn(p, model, b, jax.random.key(0), config, train=False)
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params, batch)
  sids = np.concatenate([np.zeros((1, model.n_digit), np.int64), fx["catalogue"]])
  catalogue = catalogue_lib.Catalogue.from_sids(sids, model.codebook_size)
  settings = decoding.SearchSettings("release_confidence",
                                     (int(fx["beam_width"]),) * model.n_digit, top_k=10)
  dec = decoders.make_decoder(model, catalogue, settings)
  pred, _, _ = jax.jit(dec.apply)({"params": params}, dec.tables, batch["hist_sids"],
                                  batch["hist_mask"])
  return {"enc": enc, "logits": logits, "logits_noproj": logits_noproj,
          "guided_masked": masked, "loss": loss, "grads": grads, "beam_top10": pred}


def rel_diff(ours, ref):
  """(max |ours - ref|, that divided by max |ref|)."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  err = float(np.abs(ours - ref).max()) if ref.size else 0.0
  return err, err / max(float(np.abs(ref).max()), 1e-30)


def differences(fx, ours):
  """name -> (max abs diff, max abs diff / max |release|) for every float output."""
  out = {k: rel_diff(ours[k], fx[k]) for k in ("enc", "logits", "logits_noproj", "loss")}
  ref_grads = tree_of(fx, "grad/")
  flat_ours = dict(jax.tree_util.tree_flatten_with_path(ours["grads"])[0])
  for path, g in flat_ours.items():
    name = "/".join(p.key for p in path)
    ref = ref_grads
    for part in name.split("/"):
      ref = ref[part]
    out["grad/" + name] = rel_diff(g, ref)
  return out


def main(argv):
  if len(argv) != 2:
    sys.exit(__doc__)
  fx = load_fixture(argv[1])
  ours = our_outputs(fx)
  diffs = differences(fx, ours)
  grads = [v for k, v in diffs.items() if k.startswith("grad/")]
  print(f"fixture {argv[1]}: {fx['config']}")
  for k in ("enc", "logits", "logits_noproj", "loss"):
    print(f"  {k:14s} max abs {diffs[k][0]:.3g}  rel {diffs[k][1]:.3g}")
  print(f"  {'grads':14s} max abs {max(g[0] for g in grads):.3g}  "
        f"rel {max(g[1] for g in grads):.3g} (worst of {len(grads)} leaves)")
  print(f"  guided views equal: {np.array_equal(ours['guided_masked'], fx['guided_masked'])}")
  same = np.asarray(ours["beam_top10"]) == fx["beam_top10"]
  print(f"  beam top-10 equal: {same.all()} ({same.all(-1).sum()} of {same.shape[0] * 10} "
        f"entries, beam {int(fx['beam_width'])})")


if __name__ == "__main__":
  main(sys.argv)
