"""Errors that reach the user as one line and a non-zero exit status.

Anything the user can get wrong (a missing file, a bad option, no /dev/kvm)
raises :class:`UserError`; the CLI prints its message and exits with
``exit_status``.  Anything a *guest* does wrong is not an error of trapvisor:
it is reported as a guest event (triple fault, unimplemented instruction) by
the machine that ran it.
"""


class UserError(Exception):
    """A problem with the user's input or environment, shown as one line."""

    exit_status = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint
