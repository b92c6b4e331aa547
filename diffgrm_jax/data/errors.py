"""The one error type the data layer raises for bad input."""


class DataError(ValueError):
  """Bad or missing input data: the message names the file (and line) and the fix."""
