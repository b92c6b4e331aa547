"""workdir.config_from_dict: a workdir's config.json read back, and the one upgrade of
configs saved before a field existed."""

from diffgrm_jax import defaults
from diffgrm_jax import workdir as workdir_lib


def test_round_trip_keeps_every_field():
  c = defaults.get_config()
  c.model.d_model, c.data.length_buckets, c.train.micro_batches = 48, (8, 24), 3
  back = workdir_lib.config_from_dict(c.to_dict())
  assert back.to_dict() == c.to_dict()


def test_fields_added_later_keep_the_old_behaviour_when_missing():
  obj = defaults.get_config().to_dict()
  del obj["train"]["micro_batches"], obj["train"]["masked_last_block"]
  old = workdir_lib.config_from_dict(obj)
  # What runs did before the fields existed, not today's defaults (0 and True).
  assert (old.train.micro_batches, old.train.masked_last_block) == (1, False)
  assert (defaults.get_config().train.micro_batches,
          defaults.get_config().train.masked_last_block) == (0, True)
  # Unknown fields (another version's) are ignored.
  obj["train"]["from_the_future"] = 1
  assert "from_the_future" not in workdir_lib.config_from_dict(obj).train
