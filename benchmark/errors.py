"""User-facing errors: one line that says what is wrong and how to fix it."""


class BenchError(Exception):
    """Bad input or environment. The CLI prints ``error: <message>`` and exits with status 2, no traceback."""
