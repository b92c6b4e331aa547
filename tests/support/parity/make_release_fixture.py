"""Records reference outputs of the released PyTorch DIFF_GRM for tests/unit/release/test_parity.py.

Runs the unmodified released code (github liuzhao09/DiffGRM, commit ad7b971) from a
separate checkout, in a Python environment that has torch and the release's
requirements. Nothing of the release is copied: the script imports it from --release.
The release's tokenizer module imports sentence_transformers at import time only (for
item text embeddings, unused here); when that package is missing, a placeholder module
stands in for it.

  python tests/support/parity/make_release_fixture.py --release /path/to/DiffGRM \
      --out tests/support/parity/release_small.npz                    # the committed fixture
  python tests/support/parity/make_release_fixture.py --release /path/to/DiffGRM \
      --size sports --out /tmp/release_sports.npz             # paper size, not committed

What it does: builds the release's model (guided masking with guided_select=least,
LayerNorm eps 1e-5, tied output embedding, every dropout 0) with random weights drawn
wider than the release's init (so that outputs are far from ties and top-k orders are
stable under float32 rounding), converts them with tools/convert_release.py, and
records on fixed inputs (histories of several lengths, right-padded to 50 as the
release pads them):

  enc                 encoder output [B, 50, d] (padded rows zeroed)
  codes, known        every known-digit pattern with < N known digits, per row [B, P, N]
  logits              decoder logits with projected cross-attention K/V [B, P, N, C]
  logits_noproj       the same with unprojected K/V (the release's guided pass) [B, P, N, C]
  guided_masked       the guided training views the release built [B, N(views), N]
  loss                pooled, label-smoothed training loss of those views
  grad/<path>         its gradient, converted to our parameter layout
  catalogue           SIDs of a small catalogue [M, N]
  beam_top10          the release's confidence beam search top-10 [B, 10, N] (beam_width)
  params/<path>       the converted weights (flattened tree), so the test needs no torch
  state_dict/<name>   the release's own state dict (to test the converter's command line)
"""

import argparse
import os
import sys
import types

import numpy as np

SIZES = {
    # d_model, n_heads, enc layers, dec layers, n_inner, codebook, beam width, catalogue
    "small": dict(d=64, heads=2, enc=1, dec=2, inner=128, codebook=32, beam=16, n_sids=400),
    "sports": dict(d=256, heads=4, enc=1, dec=4, inner=1024, codebook=256, beam=32,
                   n_sids=3000),
}
N_DIGIT = 4
MAX_LEN = 50
HIST_LENGTHS = (50, 1, 7, 16, 3, 12, 33, 9)
LABEL_SMOOTHING = 0.1


class _Tokenizer:
  """The part of the release's tokenizer its model and beam search read."""
  sid_offset = 3
  mask_token = -1

  def __init__(self, n_digit, codebook_size, catalogue):
    self.vocab_size = 3 + n_digit * codebook_size
    self._legal = {tuple(int(x) for x in s) for s in catalogue}

  def codebooks_to_item_id(self, seq):
    return 1 if tuple(int(x) for x in seq) in self._legal else None


def _release_config(s):
  return {
      "n_digit": N_DIGIT, "codebook_size": s["codebook"], "n_embd": s["d"],
      "n_head": s["heads"], "n_inner": s["inner"], "dropout": 0.0, "attn_pdrop": 0.0,
      "resid_pdrop": 0.0, "encoder_n_layer": s["enc"], "decoder_n_layer": s["dec"],
      "norm_type": "layernorm", "norm_eps": 1e-5, "masking_strategy": "guided",
      "guided_steps": "auto", "guided_conf_metric": "msp", "guided_select": "least",
      "guided_refresh_each_step": False, "max_history_len": MAX_LEN,
      "share_decoder_output_embedding": True, "label_smoothing": LABEL_SMOOTHING,
      "current_split": "val", "dedup_strategy": "simple",
      "vectorized_beam_search": {
          "top_k_final": 10, "neg_inf_fp32": -1e9, "neg_inf_fp16": -65504.0,
          "val": {"beam_act": s["beam"], "beam_max": s["beam"]}},
  }


def _widen_weights(model, torch, gen):
  """Redraws every parameter wider than the release's init (std 0.02) so logits are peaked."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith(".bias"):
        p.copy_(0.05 * torch.randn(p.shape, generator=gen))
      elif p.ndim == 1:  # LayerNorm scales
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
      elif "embedding" in name or "emb" in name:
        p.copy_(0.5 * torch.randn(p.shape, generator=gen))
      else:
        p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[1]))


def _patterns(n):
  """Known-digit patterns with fewer than n known digits, ordered by count then bits."""
  pats = [tuple(bool((m >> i) & 1) for i in range(n)) for m in range(2 ** n - 1)]
  return np.array(sorted(pats, key=lambda p: (sum(p), p[::-1])), bool)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--release", required=True,
                  help="checkout of the released code (the folder that holds genrec/)")
  ap.add_argument("--size", choices=sorted(SIZES), default="small")
  ap.add_argument("--out", required=True, help="output .npz")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--init", choices=("wide", "release"), default="wide",
                  help="weights: 'wide' (default, see above) or the release's own init")
  ap.add_argument("--beam", type=int, default=0,
                  help="beam width of the recorded search (default: the size's, 16 / 32)")
  args = ap.parse_args(argv)
  if not os.path.isdir(os.path.join(args.release, "genrec", "models", "DIFF_GRM")):
    sys.exit(f"error: --release {args.release}: no genrec/models/DIFF_GRM in it")

  here = os.path.dirname(os.path.abspath(__file__))
  sys.path.insert(0, os.path.join(here, "..", "..", "..", "tools"))
  import convert_release  # pylint: disable=g-import-not-at-top
  try:
    import sentence_transformers  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    stub = types.ModuleType("sentence_transformers")
    stub.SentenceTransformer = None
    sys.modules["sentence_transformers"] = stub
  sys.path.insert(0, os.path.abspath(args.release))
  import torch  # pylint: disable=g-import-not-at-top
  from genrec.models.DIFF_GRM.model import DIFF_GRM  # pylint: disable=g-import-not-at-top
  from genrec.models.DIFF_GRM.beam import fast_beam_search_for_eval  # pylint: disable=g-import-not-at-top

  s = dict(SIZES[args.size])
  s["beam"] = args.beam or s["beam"]
  c, n = s["codebook"], N_DIGIT
  torch.manual_seed(args.seed)
  torch.set_num_threads(2)
  rng = np.random.default_rng(args.seed)
  gen = torch.Generator().manual_seed(args.seed)

  # Fixed inputs: histories of several lengths, kept in order and right-padded with -1.
  b = len(HIST_LENGTHS)
  hist = np.full((b, MAX_LEN, n), -1, np.int64)
  mask = np.zeros((b, MAX_LEN), bool)
  for i, length in enumerate(HIST_LENGTHS):
    hist[i, :length] = rng.integers(0, c, (length, n))
    mask[i, :length] = True
  target = rng.integers(0, c, (b, n))

  config = _release_config(s)
  catalogue = rng.integers(0, c, (s["n_sids"], n))  # extended below with searched SIDs
  tok = _Tokenizer(n, c, catalogue)
  model = DIFF_GRM(config, None, tok)
  if args.init == "wide":
    _widen_weights(model, torch, gen)
  model.eval()
  sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  params = convert_release.convert_state_dict(sd, n_heads=s["heads"], n_digit=n,
                                              codebook_size=c, shared_final_ln=True)
  hist_t, mask_t = torch.tensor(hist), torch.tensor(mask)
  out = {"hist": hist, "hist_mask": mask, "target": target,
         "hist_lengths": np.array(HIST_LENGTHS)}

  with torch.no_grad():
    enc = model.forward({"history_sid": hist_t, "history_mask": mask_t}, return_loss=False)
    enc = enc.hidden_states
    out["enc"] = enc.numpy()
    # Decoder logits for every known-digit pattern, codes from the target SID.
    pats = _patterns(n)
    p = len(pats)
    known = np.broadcast_to(pats, (b, p, n))
    codes = np.where(known, target[:, None, :], 0)
    out["codes"], out["known"] = codes, known
    flat = lambda x: torch.tensor(x.reshape(b * p, n))
    enc_rep = enc.repeat_interleave(p, dim=0)
    for key, use_cache in (("logits", True), ("logits_noproj", False)):
      # use_cache=True projects the encoder output into cross-attention K/V (decoding);
      # use_cache=False reads it unprojected (the release's guided confidence pass).
      res = model.forward_decoder_only(
          {"decoder_input_ids": flat(codes), "encoder_hidden": enc_rep,
           "mask_positions": flat(~known).float()}, digit=None, use_cache=use_cache)
      out[key] = res.logits.numpy().reshape(b, p, n, c)

  # Guided training views, pooled loss and its gradient (train mode, every dropout 0).
  # The decoder input embeddings of the views pass through model.drop; a digit is masked
  # iff its row equals that digit's mask embedding.
  seen = []
  hook = model.drop.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach()))
  model.train()
  model.zero_grad()
  tgt = torch.tensor(target)
  res = model.forward({"history_sid": hist_t, "history_mask": mask_t,
                       "decoder_input_ids": tgt, "decoder_labels": tgt}, return_loss=True)
  res.loss.backward()
  hook.remove()
  model.eval()
  views = seen[-1].numpy().reshape(n, b, n, -1)  # the release stacks views view-major
  mask_rows = model.mask_emb_table.weight.detach().numpy()
  out["guided_masked"] = np.all(views == mask_rows[None, None], axis=-1).transpose(1, 0, 2)
  out["loss"] = np.float32(res.loss.item())
  grads = {k: (v.grad.numpy() if v.grad is not None else np.zeros(v.shape, np.float32))
           for k, v in model.named_parameters()}
  grad_tree = convert_release.convert_state_dict(grads, n_heads=s["heads"], n_digit=n,
                                                 codebook_size=c, shared_final_ln=True)

  # Beam search on a catalogue that holds some of the search's own unconstrained results
  # (so lists mix legal, illegal and duplicate SIDs) and random SIDs.
  config["dedup_strategy"] = "none"
  with torch.no_grad():
    free = fast_beam_search_for_eval(model, enc, beam_size=10, tokenizer=tok,
                                     mode="confidence").numpy()
  # All results of the first half of the users, every third of the others.
  picked = np.concatenate([free[:b // 2].reshape(-1, n), free[b // 2:, ::3].reshape(-1, n)])
  catalogue = np.unique(np.concatenate([catalogue, picked]), axis=0)
  tok._legal = {tuple(int(x) for x in r) for r in catalogue}  # pylint: disable=protected-access
  config["dedup_strategy"] = "simple"
  with torch.no_grad():
    top10 = fast_beam_search_for_eval(model, enc, beam_size=10, tokenizer=tok,
                                      mode="confidence").numpy()
  out.update(catalogue=catalogue, beam_top10=top10, beam_width=np.int64(s["beam"]))
  legal = np.array([[tok.codebooks_to_item_id(r) is not None for r in u] for u in top10])
  print(f"beam top-10: {legal.sum()} of {legal.size} legal, "
        f"{sum(len({tuple(r) for r in u}) for u in top10)} unique per-user entries")

  out["config"] = np.array(repr(dict(size=args.size, n_digit=n, max_history_len=MAX_LEN,
                                     label_smoothing=LABEL_SMOOTHING, **s)))
  out.update({f"params/{k}": v for k, v in convert_release.flatten(params).items()})
  out.update({f"state_dict/{k}": v for k, v in sd.items()})
  out.update({f"grad/{k}": v for k, v in convert_release.flatten(grad_tree).items()})
  np.savez_compressed(args.out, **out)
  print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")


if __name__ == "__main__":
  main()
