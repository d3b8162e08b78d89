"""The performance report's scripts. Run them as modules from the repository root
(``python -m bench.pickup``, ``python -m bench.report``): the shared harness is tests.support."""
