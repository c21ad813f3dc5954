"""The language model: the only package that loads weights or registers hooks.

load.py (where weights come from) -> model.py (SteerModel) -> steering.py (interventions on the
residual stream, read-out capture) -> decode.py (generation) and read.py (scoring, pooling).
fastpath.py and static_cache.py make decoding fast; norms.py measures the residual norms that
steering scales are fractions of; directions.py parses and combines steering directions.
"""
