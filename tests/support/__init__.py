"""Helpers shared by the tests: configs, the tiny model, runs of the real commands, data
files, reference implementations and the release fixture (parity/)."""
