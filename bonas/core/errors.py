"""The errors bonas raises on purpose.

Every :class:`BonasError` is a user-facing problem with one line of explanation: what is wrong, where,
and how to fix it. The CLI prints that line and exits with :data:`EXIT_USAGE` without a traceback.
Anything else escaping the CLI is a bug in bonas and keeps its traceback.
"""

from __future__ import annotations

EXIT_USAGE = 2  # bad input: config, data, storage; the same code argparse uses


class BonasError(Exception):
    """Root of bonas' own errors; ``str(err)`` is the one line shown to the user."""


class ConfigError(BonasError):
    """A study config that cannot be read or is invalid."""


class DataError(BonasError):
    """A data set that is missing, unreadable or inconsistent."""


class StorageError(BonasError):
    """A storage URL that is malformed, unreachable or unwritable."""


class StudyError(BonasError):
    """A study or trial that does not exist, or cannot be used as asked."""


class UsageError(BonasError):
    """Command-line flags that do not fit together or cannot be honoured."""


class SchedulerError(BonasError):
    """A batch scheduler (Slurm) that is missing or refuses a job."""
