"""fastgossip's benchmarks: pytest-benchmark comparisons, ratios, end-to-end runners.

``pytest bench/ --benchmark-enable --benchmark-group-by=group``   timed comparison tables
``python -m bench.ratios``   every hot path in one process, against the targets
``python -m bench.e2e``      nodes over loopback: ingest, convergence, traffic
``python -m bench.members``  failure detection on 20 processes, against serf
``python -m bench.members_hog``  50 nodes in one process beside CPU hogs: no false verdict
``python -m bench.sim_members``  membership in the simulator by cluster size
``python -m bench.secure``   the cluster key and mutual TLS against plaintext
``python -m bench.report``   renders bench/results/*.json to docs/benchmarks.md
"""
