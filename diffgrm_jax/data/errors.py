"""The one error type the data layer raises for bad input.

Raised (message names the file, and the line where there is one):
  missing file ........................ "<path>: sequence file not found" / "<path>: file not found"
  truncated or corrupt gzip ........... "<path>: truncated or corrupt gzip after line N"
  malformed line ...................... "<path>:<line>: malformed line ..."
  user without items .................. "<path>:<line>: user U has no items"
  item id out of range ................ "<path>:<line>: item id X out of range 1..N"
  unknown amazon2014 category ......... "amazon2014: unknown category 'X' ..."
  download failure .................... "download <url>: the server answered HTTP 404 ..." /
                                        "download <url>: cannot reach the host ...; are you offline?"
  embedding file of the wrong shape ... "<path>: embedding of shape (a, b); expected [N, dim] ..."
  dataset too small ................... "<path>: user U (line L) has 2 items; leave-one-out needs
                                        at least 3" / "dataset too small: N training items for
                                        codebooks of K codes"
  bad codebook size ................... "sid.codebook_size=K: must be a power of two ..."
  a data path that is a URL ........... "data.cache_dir=gs://...: the data and its cache must
                                        be local paths ..."
  interactions source (interactions.py):
    missing field / column ............ "<path>:<line>: missing 'item_id'" /
                                        "<path>:<line>: no column 'item_id' in the header ..."
    unparsable timestamp .............. "<path>:<line>: unparsable timestamp 'x' in column 't'"
    repeated header, wrong field count  "<path>:<line>: duplicate header row ..." /
                                        "<path>:<line>: 2 fields, the header has 3"
    empty file ........................ "<path>: empty file ..." / "<path>: no rows after the header"
    duplicate item-table id ........... "<path>:<line>: duplicate item id 'x' (first at line L)"
    nothing left after the k-core ..... "<path>: no interactions left after the 5-core filter ..."
"""

from diffgrm_jax.runtime.cli import UserError


class DataError(UserError, ValueError):
  """Bad or missing input data: the message names the file (and line) and the fix."""
