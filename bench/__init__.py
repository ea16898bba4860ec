"""Benchmarks of the generator and the fine-tune pipeline (pytest-benchmark suites), and ``bench-report``.

Run them with ``pytest bench --benchmark-only`` (see the README); a plain ``pytest`` run only
smoke-tests them.
"""
