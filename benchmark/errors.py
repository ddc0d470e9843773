"""User-facing errors: one line that says what is wrong and how to fix it."""


class BenchError(Exception):
    """Bad input or environment. The CLI prints ``error: <message>`` and exits with status 2, no traceback."""


def check_param_types(owner: str, given: dict, defaults: dict, template: str) -> None:
    """A parameter whose default is a number (or true/false) must be given as one: names the first that is not.
    `template` shows the right form, e.g. "nint[{key}={value}]" (filled in with the default)."""
    for key, value in given.items():
        default = defaults.get(key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                example = template.format(key=key, value=str(default).lower())
                raise BenchError(f"{owner}: {key} must be true or false, got {value!r}; e.g. {example}")
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                example = template.format(key=key, value=default)
                raise BenchError(f"{owner}: {key} must be a number, got {value!r}; e.g. {example}")
