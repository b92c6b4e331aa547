"""Decoding: how to search (`settings.py`), the beam searches (`beam_search.py`, with the
beam bookkeeping of `beam_ops.py`) and the search each strategy runs (`decoders.py`)."""
