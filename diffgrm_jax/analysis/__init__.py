"""Analyses apart from the training and decoding path: target likelihoods per fill order
(`likelihood.py`) and the dense legality table (`dense_legality.py`)."""
