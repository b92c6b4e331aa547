"""A plain JSON-lines copy of the TensorBoard scalars (`<logdir>/scalars.jsonl`).

One line per `Writer.scalars` call: {"step": S, "<tag>": value, ...}. It is what
`diffgrm_jax.plot` reads: no TensorBoard reader is needed. On resume, lines at or after
the resume step are dropped (as TensorBoard's purge_step hides them), so the steps a killed
run logged after its last checkpoint are not shown twice. Written through `paths`: local
files are appended line by line; object stores (no append) get the whole file rewritten
every `flush_every` lines and at close.
"""

import json

from diffgrm_jax.runtime import paths

FILENAME = "scalars.jsonl"


def _read_lines(path) -> list[dict]:
  if not paths.exists(path):
    return []
  with paths.open(path) as f:
    out = []
    for line in f:
      if line.strip():
        try:
          out.append(json.loads(line))
        except json.JSONDecodeError:
          break  # the last line of a killed run may be cut short: ignore it and the rest
    return out


class ScalarLog:
  """Appends {"step": S, tag: value, ...} lines to <logdir>/scalars.jsonl."""

  def __init__(self, logdir, resume_step=None, flush_every=200):
    self.path = paths.join(logdir, FILENAME)
    self._remote = paths.is_remote(self.path)
    self._flush_every = flush_every
    self._rows = _read_lines(self.path) if (resume_step is not None or self._remote) else []
    if resume_step is not None:
      self._rows = [r for r in self._rows if r["step"] < resume_step]
    if resume_step is not None or self._remote:
      self._rewrite()
    self._file = None if self._remote else paths.open(self.path, "a")
    if self._remote:
      self._pending = 0

  def _rewrite(self):
    paths.write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self._rows))

  def write(self, step, values):
    row = {"step": int(step), **{k: float(v) for k, v in values.items()}}
    if self._remote:
      self._rows.append(row)
      self._pending += 1
      if self._pending >= self._flush_every:
        self._rewrite()
        self._pending = 0
      return
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()

  def close(self):
    if self._remote:
      self._rewrite()
    elif self._file is not None:
      self._file.close()
      self._file = None


def read_scalars(logdir) -> dict[str, tuple[list[int], list[float]]]:
  """{tag: (steps, values)} sorted by step; the last value logged for a step wins."""
  by_tag = {}
  for row in _read_lines(paths.join(logdir, FILENAME)):
    step = row["step"]
    for k, v in row.items():
      if k != "step":
        by_tag.setdefault(k, {})[step] = v
  return {k: (sorted(d), [d[s] for s in sorted(d)]) for k, d in by_tag.items()}
