"""The servers under test, one module each, run as ``python -m esl_app.bench.servers.<name>`` by the runner.

Each plays the same flow and prints ``READY <port> <pid>`` once it accepts calls (``_common``). They ship
in the package so ``esl-app bench --suite`` works from an installed wheel, not only from a checkout.
"""
