"""Every error a user can cause and fix, in one hierarchy.

The CLI prints any `SteerError` as one line without a traceback (set STEER_DEBUG=1 to see it)
and exits with its `exit_code`: 2 for input that is wrong before any work starts (a config, a
file, an argument), 1 for the rest.
"""

from __future__ import annotations

from typing import Any


class SteerError(Exception):
    """Base class of the expected, user-facing errors; `exit_code` is what the CLI exits with.

    Example:
        >>> import steer
        >>> try:
        ...     steer.load_model("missing.gguf")
        ... except steer.SteerError as e:
        ...     print(type(e).__name__, e.exit_code)
        ModelLoadError 1
    """

    exit_code = 1


class InputError(SteerError, ValueError):
    """Input that is wrong before any work starts: exit code 2.

    Example:
        >>> import steer
        >>> try:
        ...     steer.load_config("no-such-config.yaml")
        ... except steer.InputError as e:
        ...     print(e.exit_code, e)
        2 no-such-config.yaml: <top level>: got nothing, expected an existing YAML file
    """

    exit_code = 2


MISSING: Any = type("Missing", (), {"__repr__": lambda self: "nothing"})()


class ConfigError(InputError):
    """A config value that cannot be used; the message names the file, the key path, what was
    given and what was expected, on one line.

    Example:
        >>> str(ConfigError("exp.yaml", "steering.layers[0]", 99, "a layer in 0..29"))
        'exp.yaml: steering.layers[0]: got 99, expected a layer in 0..29'
    """

    def __init__(self, source: str, path: str, given: Any, expected: str):
        self.source, self.path, self.given, self.expected = source, path, given, expected
        shown = repr(given)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{source}: {path or '<top level>'}: got {shown}, expected {expected}")


class TaskConfigError(InputError):
    """A task's settings that its own checks refuse: `field` names the task's key, and the
    config loader turns it into a ConfigError at `tasks[i].<field>`."""

    def __init__(self, field: str, given: Any, expected: str):
        self.field, self.given, self.expected = field, given, expected
        super().__init__(f"{field}: got {given!r}, expected {expected}")


class ModelLoadError(SteerError, RuntimeError):
    """A model could not be found or loaded."""


class CorpusError(InputError):
    """A corpus file is missing or malformed."""


class TaskDataError(InputError):
    """A suite or task file that cannot be read."""


class SteeringError(InputError):
    """A steering expression or intervention is invalid."""


class VectorError(InputError, KeyError):
    """A vector is missing or a vector file is inconsistent."""

    def __str__(self):
        return str(self.args[0])


class RunLocked(SteerError):
    """Another process is writing the run directory."""


class TooManyFailures(SteerError):
    """A run stopped after `max_failures` failed cells."""


class CacheError(SteerError):
    """A cache entry that cannot be used (truncated, empty, incomplete, lying). Readers of the
    cache catch it, print a one-line notice and rebuild the entry; users rarely see it."""


class WriteError(SteerError):
    """The run directory could not be written (a read-only or full disk, no permission): the
    message is `cannot write to <path>: <reason>`."""


class RunDirError(InputError):
    """A run directory that cannot be used: outside `output_dir`, an existing folder that is not
    a run directory, or one that cannot be created (read-only, no permission)."""
