"""Records reference outputs of RecTools' SASRec for tests/unit/model/test_sasrec_parity.py.

RecTools 0.13 (PyPI `rectools[torch]==0.13.0`) is the implementation the eSASRec
benchmark ran for the published SASRec+SS numbers that configs/sasrec.py follows. Run
this in a Python environment that has it (and torch); nothing of RecTools is copied, the
script imports it:

  python -m venv /tmp/rt && /tmp/rt/bin/pip install 'rectools[torch]==0.13.0'
  /tmp/rt/bin/python tests/support/parity/make_rectools_fixture.py \
      --out tests/support/parity/rectools_sasrec_small.npz

What it does: builds RecTools' SASRec torch model (2 blocks, 2 heads, width 16, the last
10 items, 40 items) by fitting `SASRecModel` for one epoch on a small synthetic log, then
redraws every weight with non-zero biases and LayerNorm parameters away from 1 / 0 (so
that every term of the forward pass shows), and records on fixed inputs, left-padded to
the full length as RecTools pads them and stored left-aligned as this package reads them:

  items, targets   histories [B, L] and the next item at each position (0 = padding)
  negatives        per-position negatives [B, L, M] of the sampled softmax
  states           the model's output at every position [B, L, D] (padding rows zeroed)
  scores_last      every item's score after each history, RecTools' full ranking [B, I]
  loss             RecTools' sampled-softmax loss of those targets and negatives
  params/<path>    the weights in this package's layout (flattened tree): the test needs
                   no torch
  grad/<path>      the loss's gradient, in the same layout

All dropout is off (the model in eval mode): the forward pass and the loss, not the
random streams, are what can be compared.
"""

import argparse

import numpy as np

N_ITEMS, D, HEADS, BLOCKS, L, M = 40, 16, 2, 2, 10, 12
LENGTHS = (10, 1, 3, 7, 2, 9, 5, 10)


def _fit_tiny(rng):
  """RecTools' SASRec fitted one epoch on a synthetic log: its torch model and module."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from rectools import Columns  # pylint: disable=g-import-not-at-top
  from rectools.dataset import Dataset  # pylint: disable=g-import-not-at-top
  from rectools.models import SASRecModel  # pylint: disable=g-import-not-at-top
  rows = []
  for user in range(60):
    for t, item in enumerate(rng.integers(0, N_ITEMS, int(rng.integers(3, 15)))):
      rows.append((user, int(item), 1.0, t))
  log = pd.DataFrame(rows, columns=[Columns.User, Columns.Item, Columns.Weight,
                                    Columns.Datetime])
  model = SASRecModel(n_factors=D, session_max_len=L, n_blocks=BLOCKS, n_heads=HEADS,
                      dropout_rate=0.2, loss="sampled_softmax", n_negatives=M, epochs=1,
                      deterministic=True, verbose=0)
  model.fit(Dataset.construct(log))
  return model.torch_model, model.lightning_model


def _redraw(torch_model, torch, gen):
  with torch.no_grad():
    for name, p in torch_model.named_parameters():
      if "norm" in name and name.endswith(".weight"):
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
      elif p.ndim == 1:
        p.copy_(0.1 * torch.randn(p.shape, generator=gen))
      else:
        p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[-1]))


def _ours(named):
  """RecTools' parameter names and arrays -> this package's SASRec tree (flattened with '/')."""
  out = {"item_embedding": named["item_model.item_net_blocks.0.ids_emb.weight"],
         "position_embedding": named["pos_encoding_layer.pos_emb.weight"],
         "final_ln/scale": named["transformer_layers.last_layernorm.weight"],
         "final_ln/bias": named["transformer_layers.last_layernorm.bias"]}
  dense = lambda dst, src: out.update({f"{dst}/kernel": named[f"{src}.weight"].T,
                                       f"{dst}/bias": named[f"{src}.bias"]})
  for i in range(BLOCKS):
    p, b = f"transformer_layers.transformer_blocks.{i}.", f"block_{i}/"
    w, bias = named[p + "multi_head_attn.in_proj_weight"], named[p + "multi_head_attn.in_proj_bias"]
    for j, part in enumerate(("query", "key", "value")):  # torch's fused [3D, D] projection
      out[b + part + "/kernel"] = w[j * D:(j + 1) * D].T
      out[b + part + "/bias"] = bias[j * D:(j + 1) * D]
    dense(b + "out", p + "multi_head_attn.out_proj")
    dense(b + "ffn_in", p + "feed_forward.ff_linear_1")
    dense(b + "ffn_out", p + "feed_forward.ff_linear_2")
    for ln, src in (("ln_attn", "q_layer_norm"), ("ln_ffn", "ff_layer_norm")):
      out[f"{b}{ln}/scale"] = named[f"{p}{src}.weight"]
      out[f"{b}{ln}/bias"] = named[f"{p}{src}.bias"]
  return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", required=True, help="output .npz")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)
  import rectools  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(args.seed)
  rng = np.random.default_rng(args.seed)
  gen = torch.Generator().manual_seed(args.seed)

  torch_model, module = _fit_tiny(rng)
  n_rows = torch_model.item_model.item_net_blocks[0].ids_emb.num_embeddings  # items + PAD
  assert n_rows == N_ITEMS + 1, n_rows
  _redraw(torch_model, torch, gen)
  torch_model.eval()

  b = len(LENGTHS)
  padded = {k: np.zeros((b, L), np.int64) for k in ("x", "y")}
  neg_padded = np.zeros((b, L, M), np.int64)
  for r, n in enumerate(LENGTHS):
    seq = rng.integers(1, N_ITEMS + 1, n + 1)
    padded["x"][r, L - n:], padded["y"][r, L - n:] = seq[:-1], seq[1:]
    neg_padded[r, L - n:] = rng.integers(1, N_ITEMS + 1, (n, M))
  x, y, neg = (torch.from_numpy(a) for a in (padded["x"], padded["y"], neg_padded))
  table = torch_model.item_model.get_all_embeddings()
  states = torch_model.encode_sessions({"x": x}, table)
  logits = torch_model(batch={"x": x}, candidate_item_ids=torch.cat([y[..., None], neg], -1))
  # RecTools' own loss function (a method of its Lightning module).
  sampled_softmax = module._calc_sampled_softmax_loss  # pylint: disable=protected-access
  loss = sampled_softmax(logits, y, torch.ones(y.shape))
  torch_model.zero_grad()
  loss.backward()
  with torch.no_grad():
    scores = (states[:, -1] @ table.T).numpy()

  def align(a):  # left-padded -> left-aligned (padding on the right)
    out = np.zeros_like(a)
    for r, n in enumerate(LENGTHS):
      out[r, :n] = a[r, L - n:]
    return out

  weights = {k: v.detach().numpy() for k, v in torch_model.named_parameters()}
  grads = {k: v.grad.numpy() for k, v in torch_model.named_parameters()}
  record = {"items": align(padded["x"]).astype(np.int32),
            "targets": align(padded["y"]).astype(np.int32),
            "negatives": align(neg_padded).astype(np.int32),
            "states": align(states.detach().numpy()).astype(np.float32),
            "scores_last": scores.astype(np.float32),
            "loss": np.float32(loss.item()),
            "rectools_version": np.array(rectools.__version__)}
  record.update({f"params/{k}": v for k, v in _ours(weights).items()})
  record.update({f"grad/{k}": v for k, v in _ours(grads).items()})
  np.savez_compressed(args.out, **record)
  print(f"wrote {args.out}: rectools {rectools.__version__}, loss {loss.item():.6f}")


if __name__ == "__main__":
  main()
