"""TensorBoard event files (tensorboardX) and their plain copy scalars.jsonl (for plots),
written by process 0 only."""

from tensorboardX import SummaryWriter

from diffgrm_jax.runtime import paths
from diffgrm_jax.runtime import scalar_log


class Writer:
  """Scalar writer that is a no-op when disabled (non-zero processes)."""

  def __init__(self, logdir, enabled=True, resume_step=None):
    # purge_step hides events a killed run wrote after its last checkpoint, so a resumed
    # run's curves have no duplicated stretch.
    if enabled:  # the folder through the path layer; tensorboardX then only adds its file
      paths.makedirs(logdir)
    self._w = SummaryWriter(logdir, purge_step=resume_step) if enabled else None
    self._log = scalar_log.ScalarLog(logdir, resume_step) if enabled else None

  def scalars(self, step, values):
    if self._w is None:
      return
    for k, v in values.items():
      self._w.add_scalar(k, float(v), int(step))
    self._log.write(step, values)

  def close(self):
    if self._w is not None:
      self._w.close()
      self._log.close()
