"""The released PyTorch code's behaviours that differ from the core model and search, kept
for exact comparisons with it (docs/release_parity.md): `model.py`, `search.py`."""
