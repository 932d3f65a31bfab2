"""asv benchmarks (asv's own format; `nox -s asv` runs them, see asv.conf.json).

`track_*` values are tracked so that up is worse: periods over the single device's (1 / speedup),
prediction errors as absolute values, redundancy, seconds, cost ratios. The one exception is
exactness, 1 when every output was bit-exact and 0 when not, which must never fall.
"""
