"""fastgossip's benchmarks: pytest-benchmark comparisons, ratios, end-to-end runners.

``pytest bench/ --benchmark-enable --benchmark-group-by=group``   timed comparison tables
``python -m bench.ratios``   every hot path in one process, against the targets
``python -m bench.e2e``      nodes over loopback: ingest, convergence, traffic
``python -m bench.report``   renders bench/results/*.json to docs/benchmarks.md
"""
