"""The data and its cache are local: a bucket URL in a data field is a one-line error
naming the field, before any work (only --workdir may be a bucket)."""

import pytest

from diffgrm_jax.data import DataError
from diffgrm_jax.data import dataset
from support.configs import make_config


@pytest.mark.parametrize("field", dataset.LOCAL_FIELDS)
def test_a_url_in_a_data_field_is_refused_by_name(field):
  config = make_config(**{field: "gs://bucket/data"})
  with pytest.raises(DataError, match=rf"^{field}=gs://bucket/data: the data and its cache "
                                      r"must be local paths \(only --workdir may be a bucket\)"):
    dataset.prepare_data(config, verbose=False)


def test_local_paths_pass():
  dataset.check_local_paths(make_config(**{"data.cache_dir": "/tmp/c", "embedding.path": "e.npy"}))
