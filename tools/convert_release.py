"""Converts a checkpoint of the released PyTorch DIFF_GRM into diffgrm_jax parameters.

The released trainer saves the model's `state_dict` (`saved/<run>/pytorch_model.bin`).
This script maps it onto the Flax parameter tree of `diffgrm_jax.model.DiffGRM` built
with the release-compatible options (docs/release_parity.md):

  model.shared_final_ln=True   (the release has one final LayerNorm; with False the
                                converter copies it into both enc_ln and dec_ln)
  model.tie_heads=True         (False when the release used its untied output adapter)

Usage (torch is needed only to read a .bin/.pt/.pth file; a state dict saved as .npz,
one array per state-dict key, needs numpy only):

  python tools/convert_release.py --checkpoint saved/run/pytorch_model.bin \
      --n_heads 4 --out release_params.npz
  python tools/convert_release.py --checkpoint sd.npz --n_heads 4 --out params_dir --orbax

`--out X.npz` writes the flattened tree ('/'-joined paths, e.g. 'dec_0/cross_attn/query/
kernel'); load it with `load_params_npz`. `--orbax` writes an orbax PyTree checkpoint
(needs jax and orbax) that `orbax.checkpoint.StandardCheckpointer().restore(path)`
returns as the `params` dict. Evaluate either with `model.apply({'params': params}, ...)`
or `diffgrm_jax.evaluation.evaluate.evaluate({'params': params}, model, ...)`.

Shapes (d = d_model, H heads, N digits, C codes; torch Linear weights are [out, in]):
  embedding.weight [3 + N*C, d]     rows 3.. -> token_embedding [N*C, d] (0-2: PAD/BOS/EOS)
  item_mlp.{0,2}                    -> item_in, item_out (kernel = weight.T)
  pos_emb_enc.weight [L, d]         -> position_embedding
  mask_emb_table.weight [N, d]      -> mask_embedding
  *.qkv.weight [3d, d]              -> query/key/value kernels [d, H, d/H]
  *.proj                            -> out (kernel [H, d/H, d])
  encoder ln_1/ln_2, decoder ln_1/ln_2/ln_3 -> ln_self / ln_cross / ln_mlp
  mlp.c_fc / mlp.c_proj             -> mlp/wi, mlp/wo
  ln_f                              -> final_ln (or enc_ln and dec_ln)
  output_adapter.weight (untied)    -> head_adapter [N, d, d] (the same matrix per digit)
"""

import argparse
import re
import sys

import numpy as np

SID_OFFSET = 3  # the release's token ids: 0 PAD, 1 BOS, 2 EOS, then digit-major SID codes


def _linear(sd, prefix, bias=True):
  out = {"kernel": sd[prefix + ".weight"].T}
  if bias:
    out["bias"] = sd[prefix + ".bias"]
  return out


def _norm(sd, prefix):
  return {"scale": sd[prefix + ".weight"], "bias": sd[prefix + ".bias"]}


def _attention(sd, prefix, n_heads):
  w = sd[prefix + ".qkv.weight"]  # [3d, d]
  d = w.shape[1]
  hd = d // n_heads
  heads = lambda m: {"kernel": m.T.reshape(d, n_heads, hd)}
  return {"query": heads(w[:d]), "key": heads(w[d:2 * d]), "value": heads(w[2 * d:]),
          "out": {"kernel": sd[prefix + ".proj.weight"].T.reshape(n_heads, hd, d),
                  "bias": sd[prefix + ".proj.bias"]}}


def _count(sd, pattern):
  return len({m.group(1) for k in sd for m in [re.match(pattern, k)] if m})


def convert_state_dict(state_dict, *, n_heads, n_digit=4, codebook_size=256,
                       shared_final_ln=True):
  """Release state dict (name -> numpy array) -> nested dict of float32 arrays: the
  `params` of `DiffGRM(n_heads=n_heads, shared_final_ln=shared_final_ln, ...)`."""
  sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
  emb = sd["embedding.weight"]
  n_tokens = n_digit * codebook_size
  if emb.shape[0] != SID_OFFSET + n_tokens:
    raise ValueError(f"embedding.weight has {emb.shape[0]} rows; n_digit={n_digit} and "
                     f"codebook_size={codebook_size} need {SID_OFFSET + n_tokens}")
  if emb.shape[1] % n_heads:
    raise ValueError(f"d_model={emb.shape[1]} is not divisible by n_heads={n_heads}")
  p = {
      "token_embedding": emb[SID_OFFSET:],
      "item_in": _linear(sd, "item_mlp.0"),
      "item_out": _linear(sd, "item_mlp.2"),
      "position_embedding": sd["pos_emb_enc.weight"],
      "mask_embedding": sd["mask_emb_table.weight"],
  }
  for i in range(_count(sd, r"encoder_blocks\.(\d+)\.")):
    b = f"encoder_blocks.{i}"
    p[f"enc_{i}"] = {"ln_self": _norm(sd, b + ".ln_1"),
                     "self_attn": _attention(sd, b + ".attn", n_heads),
                     "ln_mlp": _norm(sd, b + ".ln_2"),
                     "mlp": {"wi": _linear(sd, b + ".mlp.c_fc"),
                             "wo": _linear(sd, b + ".mlp.c_proj")}}
  for i in range(_count(sd, r"decoder_blocks\.(\d+)\.")):
    b = f"decoder_blocks.{i}"
    p[f"dec_{i}"] = {"ln_self": _norm(sd, b + ".ln_1"),
                     "self_attn": _attention(sd, b + ".self_attn", n_heads),
                     "ln_cross": _norm(sd, b + ".ln_2"),
                     "cross_attn": _attention(sd, b + ".cross_attn", n_heads),
                     "ln_mlp": _norm(sd, b + ".ln_3"),
                     "mlp": {"wi": _linear(sd, b + ".mlp.c_fc"),
                             "wo": _linear(sd, b + ".mlp.c_proj")}}
  if shared_final_ln:
    p["final_ln"] = _norm(sd, "ln_f")
  else:
    p["enc_ln"] = _norm(sd, "ln_f")
    p["dec_ln"] = _norm(sd, "ln_f")
  if "output_adapter.weight" in sd:  # the release's untied output (model.tie_heads=False)
    p["head_adapter"] = np.broadcast_to(sd["output_adapter.weight"].T,
                                        (n_digit,) + sd["output_adapter.weight"].shape).copy()
  return p


def flatten(tree, prefix=""):
  """Nested dict -> {'a/b/c': array}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}/"))
    else:
      out[prefix + k] = np.asarray(v)
  return out


def unflatten(flat):
  """{'a/b/c': array} -> nested dict."""
  tree = {}
  for k, v in flat.items():
    node = tree
    *parents, leaf = k.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = v
  return tree


def load_params_npz(path):
  """Reads a `--out X.npz` file back into the nested `params` dict."""
  with np.load(path) as f:
    return unflatten({k: f[k] for k in f.files})


def load_state_dict(path):
  """State dict from a torch file (.bin/.pt/.pth) or an .npz of arrays."""
  if str(path).endswith(".npz"):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    sys.exit(f"error: reading {path} needs torch (or save the state dict as .npz)")
  sd = torch.load(path, map_location="cpu")
  return {k: v.detach().float().numpy() for k, v in sd.items()}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog="See the module docstring for the parameter mapping.")
  ap.add_argument("--checkpoint", required=True,
                  help="release state dict: pytorch_model.bin / .pt / .pth, or .npz")
  ap.add_argument("--n_heads", type=int, required=True, help="attention heads (Sports: 4)")
  ap.add_argument("--n_digit", type=int, default=4)
  ap.add_argument("--codebook_size", type=int, default=256)
  ap.add_argument("--two_final_ln", action="store_true",
                  help="write enc_ln and dec_ln (model.shared_final_ln=False) instead of final_ln")
  ap.add_argument("--out", required=True, help="output .npz file, or a folder with --orbax")
  ap.add_argument("--orbax", action="store_true", help="write an orbax checkpoint folder")
  args = ap.parse_args(argv)
  try:
    params = convert_state_dict(load_state_dict(args.checkpoint), n_heads=args.n_heads,
                                n_digit=args.n_digit, codebook_size=args.codebook_size,
                                shared_final_ln=not args.two_final_ln)
  except KeyError as e:
    sys.exit(f"error: {args.checkpoint}: no parameter {e} (not a DIFF_GRM state dict?)")
  except ValueError as e:
    sys.exit(f"error: {args.checkpoint}: {e}")
  if args.orbax:
    import os  # pylint: disable=g-import-not-at-top
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(os.path.abspath(args.out), params)
    ckpt.wait_until_finished()
  else:
    np.savez(args.out, **flatten(params))
  n = sum(v.size for v in flatten(params).values())
  print(f"wrote {args.out}: {n:,} parameters")


if __name__ == "__main__":
  main()
