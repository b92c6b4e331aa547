"""DIFF_GRM in JAX/Flax: the commands at the top (train, eval, prepare, recommend, plot), one
folder per stage below (data, sid, model, training, decoding, evaluation, runtime), the
released code's variants in release/ and analyses in analysis/ (docs/design.md)."""
