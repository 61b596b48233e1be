"""taskvisor's benchmarks: ``python -m benchmarks`` (harness and how to add a module:
``benchmarks/harness.py``)."""
