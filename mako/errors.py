"""The few exception types the entry points know how to report."""


class MakoError(Exception):
    """Base class for errors mako-zero reports itself."""


class ConfigError(MakoError):
    """The config file is missing, unreadable or has a bad value (exit 78)."""


class LockBusy(MakoError):
    """Another process holds the lock (exit 75)."""


class ProviderError(MakoError):
    """An LLM provider call failed; `kind` says how (timeout, http_429, bad_json, ...)."""

    def __init__(self, kind, message, status=None, usage_limit=False, retry_after=None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.usage_limit = usage_limit
        self.retry_after = retry_after


class AllProvidersFailed(MakoError):
    """Every configured provider failed this run."""


class ResponseError(MakoError):
    """The model's reply could not be parsed or failed validation (PARSE_ERROR)."""


class TelegramError(MakoError):
    """A Telegram send failed (never fatal to a tick)."""


class DeadlineExceeded(MakoError):
    """The run's own deadline passed before it could finish."""


class Terminated(BaseException):
    """SIGTERM arrived (the supervisor is stopping); the run records itself and exits.

    A BaseException, like KeyboardInterrupt, so no `except Exception` inside an action swallows it.
    """


class PathRefused(MakoError):
    """A model-supplied path broke a file rule (§6); reported as an action error, never raised past it."""


EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_BUSY = 75
EXIT_CONFIG = 78
