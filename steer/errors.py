"""Errors a user can cause and fix; the CLI prints them as one line, without a traceback."""


class SteerError(Exception):
    """Base class of the expected, user-facing errors."""


class ModelLoadError(SteerError, RuntimeError):
    """A model could not be found or loaded."""


class CorpusError(SteerError, ValueError):
    """A corpus file is missing or malformed."""


class SteeringError(SteerError, ValueError):
    """A steering expression or intervention is invalid."""


class VectorError(SteerError, KeyError):
    """A vector is missing or a vector file is inconsistent."""

    def __str__(self):
        return str(self.args[0])
