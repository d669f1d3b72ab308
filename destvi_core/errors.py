"""User-facing error and warning types.

Every error raised for bad input carries a one-line message that says what is wrong and how to
fix it; the app shows it with ``st.error`` and the CLI prints it and exits with code 2.
"""

from __future__ import annotations


class DestVIError(Exception):
    """Base class of every error DestVI Studio reports to a user."""


class InputError(DestVIError, ValueError):
    """Bad input data or parameters.

    Parameters
    ----------
    problem
        What is wrong, in plain words.
    fix
        How the user can fix it.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem.rstrip(". ")
        self.fix = fix
        message = self.problem + "."
        if fix:
            message += " Fix: " + fix.rstrip(". ") + "."
        super().__init__(message)


class ModelMismatchError(DestVIError):
    """A saved or cached model does not match the data it is loaded against."""


class CorruptedModelError(DestVIError):
    """A saved model directory is incomplete or unreadable."""


class TrainingCancelled(DestVIError):
    """Training was stopped by the user; nothing was written."""


class DestVIWarning(UserWarning):
    """Something the user should know (dropped cells, few genes, ...) that does not stop the run."""
