"""Plain-text tables of metrics for terminals and READMEs."""

METRIC_COLUMNS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


def format_table(rows, levels=("sid", "item", "item_score", "item_expand")):
  """rows: {name: {'sid/recall@5': ..., 'item/ndcg@10': ...}} -> aligned text table."""
  header = ["", "level"] + [c.replace("recall", "R").replace("ndcg", "N") for c in METRIC_COLUMNS]
  lines = [header]
  for name, m in rows.items():
    for level in levels:
      if f"{level}/recall@5" not in m:
        continue
      lines.append([name, level] + [f"{m[f'{level}/{c}']:.4f}" for c in METRIC_COLUMNS])
  widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
  return "\n".join("  ".join(x.ljust(w) for x, w in zip(r, widths)) for r in lines)
