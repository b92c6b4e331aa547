"""The released PyTorch DIFF_GRM's half of bench_vs_release.py: one timed measurement.

Runs under a Python environment with torch and the release's requirements, importing the
unmodified release from --release_dir (nothing of it is copied here). It reads the inputs
that bench_vs_release.py wrote (--inputs .npz), runs one measurement for about --seconds
and prints one JSON line: {"rate": rows/s or users/s, "peak_rss_gb": ..., "n": ...}.

  python benchmarks/release_side.py --release_dir=/path/to/DiffGRM --inputs=in.npz \
      --measure=train --batch=256 --seconds=20
  python benchmarks/release_side.py ... --measure=decode --beam=32 --batch=64

train: the release's model in train mode (guided masking with 4 views, label smoothing
0.1, its loss), backward, gradient clipping at 1.0 and an AdamW step, on random batches
of real training rows right-padded to 50 (as its collate pads them).
decode: its `generate` (encoder, then the confidence beam search with its legality check
against the catalogue) on test users, `--batch` users per call.

Its flags use argparse, not absl like the other benchmarks: this script runs in the
release's own environment, which has no absl, and it should need nothing beyond what the
release itself installs.
"""

import argparse
import json
import os
import sys
import time
import types

import numpy as np

import peak_memory  # benchmarks/peak_memory.py

MAX_LEN = 50


class Catalogue:
  """What the release's model and beam search read from its tokenizer."""
  sid_offset = 3
  mask_token = -1

  def __init__(self, n_digit, codebook_size, sids):
    self.n_digit, self.codebook_size = n_digit, codebook_size
    self.vocab_size = 3 + n_digit * codebook_size
    self._item = {tuple(int(x) for x in s): i + 1 for i, s in enumerate(sids)}

  def codebooks_to_item_id(self, seq):
    return self._item.get(tuple(int(x) for x in seq))


def release_config(args, n_digit, codebook_size):
  return {
      "n_digit": n_digit, "codebook_size": codebook_size, "n_embd": args.d_model,
      "n_head": args.n_heads, "n_inner": args.n_inner, "dropout": 0.1, "attn_pdrop": 0.1,
      "resid_pdrop": 0.1, "embd_pdrop": 0.1, "encoder_n_layer": args.enc_layers,
      "decoder_n_layer": args.dec_layers, "norm_type": "layernorm", "norm_eps": 1e-5,
      "masking_strategy": "guided", "augment_factor": 4, "guided_steps": "auto",
      "guided_conf_metric": "msp", "guided_select": "least",
      "guided_refresh_each_step": False, "mask_probs": None, "max_history_len": MAX_LEN,
      "share_decoder_output_embedding": True, "label_smoothing": 0.1,
      "current_split": "val", "dedup_strategy": "simple",
      "vectorized_beam_search": {
          "top_k_final": 10, "neg_inf_fp32": -1e9, "neg_inf_fp16": -65504.0,
          "dedup_strategy": "simple",
          "val": {"beam_act": args.beam, "beam_max": args.beam}},
  }


def padded(hist_ids, lengths, sids):
  """Item-id histories [B, L] -> release inputs: SIDs right-padded with -1 to 50, mask."""
  b = len(hist_ids)
  out = np.full((b, MAX_LEN, sids.shape[1]), -1, np.int64)
  mask = np.zeros((b, MAX_LEN), bool)
  for i in range(b):
    n = int(min(lengths[i], MAX_LEN))
    out[i, :n] = sids[hist_ids[i, :n]]
    mask[i, :n] = True
  return out, mask


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--release_dir", required=True, help="checkout holding genrec/")
  p.add_argument("--inputs", required=True, help=".npz written by bench_vs_release.py")
  p.add_argument("--measure", choices=("train", "decode"), required=True)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--beam", type=int, default=32)
  p.add_argument("--seconds", type=float, default=20.0)
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--d_model", type=int, default=256)
  p.add_argument("--n_heads", type=int, default=4)
  p.add_argument("--n_inner", type=int, default=1024)
  p.add_argument("--enc_layers", type=int, default=1)
  p.add_argument("--dec_layers", type=int, default=4)
  args = p.parse_args()
  if not os.path.isdir(os.path.join(args.release_dir, "genrec", "models", "DIFF_GRM")):
    sys.exit(f"error: --release_dir {args.release_dir}: no genrec/models/DIFF_GRM in it")
  try:
    import sentence_transformers  # noqa: F401  (imported by the release's tokenizer module)
  except ImportError:
    stub = types.ModuleType("sentence_transformers")
    stub.SentenceTransformer = None
    sys.modules["sentence_transformers"] = stub
  sys.path.insert(0, os.path.abspath(args.release_dir))
  import torch
  from genrec.models.DIFF_GRM.model import DIFF_GRM

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  x = np.load(args.inputs)
  sids = x["sids"]  # [n_items + 1, N]
  n, c = sids.shape[1], int(x["codebook_size"])
  model = DIFF_GRM(release_config(args, n, c), None, Catalogue(n, c, sids[1:]))
  rng = np.random.default_rng(0)

  if args.measure == "train":
    hist_all, len_all, tgt_all = x["train_hist"], x["train_len"], x["train_target"]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()

    def step():
      rows = rng.choice(len(hist_all), args.batch, replace=False)
      hist, mask = padded(hist_all[rows], len_all[rows], sids)
      tgt = torch.tensor(sids[tgt_all[rows]], dtype=torch.long)
      opt.zero_grad()
      out = model({"history_sid": torch.tensor(hist), "history_mask": torch.tensor(mask),
                   "decoder_input_ids": tgt, "decoder_labels": tgt}, return_loss=True)
      out.loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      return args.batch
  else:
    hist_all, len_all = x["test_hist"], x["test_len"]
    model.eval()
    order = rng.permutation(len(hist_all))
    pos = [0]

    def step():
      rows = order[np.arange(pos[0], pos[0] + args.batch) % len(order)]
      pos[0] += args.batch
      hist, mask = padded(hist_all[rows], len_all[rows], sids)
      out = model.generate({"history_sid": torch.tensor(hist), "history_mask": torch.tensor(mask)},
                           n_return_sequences=10)
      assert out.shape[0] == args.batch, out.shape
      return args.batch

  step()  # warm-up (allocator, lazy init)
  done, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < args.seconds or done == 0:
    done += step()
  secs = time.perf_counter() - t0
  print(json.dumps({"rate": done / secs, "n": done, "seconds": secs,
                    "peak_rss_gb": peak_memory.peak_rss_gb()}))


if __name__ == "__main__":
  main()
