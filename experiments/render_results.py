"""Render experiments/results/*.jsonl as docs/results.md's results tables (Markdown).

  python experiments/render_results.py            # print the table
  python experiments/render_results.py --write    # replace the block between the markers in docs/results.md

Each row is one run recorded by experiments/reproduce.py; the paper's numbers
(its Table 2, SID level) and SASRec+SS as the eSASRec benchmark measured it (item level: it
ranks items) are listed beside them for the same dataset.
"""

import argparse
import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_MD = os.path.join(HERE, "..", "docs", "results.md")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

# The paper's test split, SID level: R@5, N@5, R@10, N@10.
PAPER = {
    "Sports_and_Outdoors": {"TIGER": (.0264, .0181, .0400, .0225), "RPG": (.0314, .0216, .0463, .0263),
                            "DiffGRM (paper)": (.0363, .0245, .0550, .0305)},
    "Beauty": {"TIGER": (.0454, .0321, .0648, .0384), "RPG": (.0550, .0381, .0809, .0464),
               "DiffGRM (paper)": (.0603, .0414, .0876, .0502)},
    "Toys_and_Games": {"TIGER": (.0521, .0371, .0712, .0432), "RPG": (.0592, .0401, .0869, .0490),
                       "DiffGRM (paper)": (.0618, .0455, .0834, .0524)},
}
# SASRec with sampled softmax, test split, item level: R@10, N@10 (eSASRec, arXiv
# 2508.06450, its table of common academic benchmarks; the same S3Rec-processed files).
PUBLISHED_SASREC = {"Beauty": (.0921, .0531), "Sports_and_Outdoors": (.0569, .0314),
                    "Toys_and_Games": (.0970, .0580)}
COLS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


def _name(row):
  if row["model_kind"] == "popularity":
    return "popularity"
  if row["model_kind"] == "autoregressive":
    return "autoregressive (left-to-right)"
  if row["model_kind"] == "sasrec":
    loss = row.get("config", {}).get("model", {}).get("sasrec_loss", "sampled_softmax")
    return "SASRec (sampled softmax)" if loss == "sampled_softmax" else "SASRec (full softmax)"
  return f"DIFF_GRM {row['masking']} + {row['decoding']}"


def _command(row):
  args = [f"--config={row.get('config_file')}"] + list(row.get("overrides", []))
  args.append("--popularity" if row["model_kind"] == "popularity" else "--workdir=DIR")
  return "`python experiments/reproduce.py " + " ".join(args) + "`"


def render(results_dir=os.path.join(HERE, "results")):
  out = []
  for path in sorted(glob.glob(os.path.join(results_dir, "*.jsonl"))):
    dataset = os.path.basename(path)[:-len(".jsonl")]
    rows = [json.loads(line) for line in open(path) if line.strip()]
    out.append(f"**{dataset}** (test split; SID level = the paper's metric, item level beside it)\n")
    out.append("| run | budget | device | epochs | SID R@5 | N@5 | R@10 | N@10 | item R@10 | item N@10 |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
      t = r["test"]
      device = f"{r['device_count']}x {r['device_kind']}" if r["model_kind"] != "popularity" else "-"
      out.append(f"| {_name(r)} | {r.get('label', '')} | {device} | {r.get('epochs_run', 0)} | "
                 + " | ".join(f"{t[f'sid/{c}']:.4f}" for c in COLS)
                 + f" | {t['item/recall@10']:.4f} | {t['item/ndcg@10']:.4f} |")
    for name, vals in PAPER.get(dataset, {}).items():
      out.append(f"| {name} | published | - | - | " + " | ".join(f"{v:.4f}" for v in vals) + " | - | - |")
    if dataset in PUBLISHED_SASREC:
      r10, n10 = PUBLISHED_SASREC[dataset]
      out.append(f"| SASRec+SS (eSASRec benchmark) | published | - | - | - | - | - | - | "
                 f"{r10:.4f} | {n10:.4f} |")
    out.append("\nCommands:\n")
    seen = set()
    for r in rows:
      cmd = _command(r)
      if cmd not in seen:
        seen.add(cmd)
        out.append(f"- {_name(r)} ({r.get('label', '')}): {cmd}")
    out.append("")
  return "\n".join(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--write", action="store_true", help="update docs/results.md between the markers")
  args = parser.parse_args()
  table = render()
  if not args.write:
    print(table)
    return
  text = open(RESULTS_MD).read()
  if BEGIN not in text or END not in text:
    raise SystemExit(f"docs/results.md lacks the markers {BEGIN} ... {END}")
  head, rest = text.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  with open(RESULTS_MD, "w") as f:
    f.write(head + BEGIN + "\n" + table + "\n" + END + tail)
  print("docs/results.md updated")


if __name__ == "__main__":
  main()
