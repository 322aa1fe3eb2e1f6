"""Compare weights: one *s learned per mask weight in one job, then every prompt drawn and measured with each."""
