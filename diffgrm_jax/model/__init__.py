"""The model: Flax modules (`layers.py`, `diffgrm.py`), their fast forms for decoding
(`decode_context.py`) and training (`masked_rows.py`), dropout, and `factory.py`, which
builds the module a config describes."""
