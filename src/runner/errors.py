"""The one exception type for problems a user can fix (config, data, files)."""


class RunnerError(Exception):
    """A user-fixable problem; the CLI prints its one-line message and exits with status 2."""
