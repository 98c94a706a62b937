"""The ground floor: the types and tools every room shares, importing nothing else of the project.

schema (the run's typed records), errors, stats (the one bootstrap), store (the run directory and
the one atomic write), run (reading a run), leakage (the one leak check), hub, paths, allocator
(glibc malloc keeps large CPU buffers mapped; the CLI asks for it). tasks/, backends/ and reports/
may import these and nothing else of harness/ (tests/test_architecture.py holds the rule).
"""
