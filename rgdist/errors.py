"""Exception types shared by every layer."""


class RgdistError(Exception):
    """Base class of the package's own errors."""


class ConfigError(RgdistError, ValueError):
    """Bad user input: names the offending key path and what is allowed (exit code 2)."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class CheckpointError(RgdistError):
    """No usable checkpoint (all candidates torn or corrupted)."""


class RunLockedError(RgdistError):
    """Another live job holds the run directory's lock."""
