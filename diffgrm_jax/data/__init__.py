"""Data layer: sources -> protocol -> embeddings -> SIDs -> grain pipelines."""

from diffgrm_jax.data.dataset import PreparedData
from diffgrm_jax.data.dataset import load_prepared
from diffgrm_jax.data.dataset import prepare_data
from diffgrm_jax.data.dataset import save_prepared
from diffgrm_jax.data.dataset import sid_hash
from diffgrm_jax.data.errors import DataError
from diffgrm_jax.data.pipeline import eval_batches
from diffgrm_jax.data.pipeline import read_options
from diffgrm_jax.data.pipeline import train_loader
from diffgrm_jax.data.protocol import Split

__all__ = ["prepare_data", "PreparedData", "Split", "DataError", "train_loader", "eval_batches",
           "read_options"]
