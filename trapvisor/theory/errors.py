"""The one error the theory package lets reach a user.

Anything a user can get wrong here -- an unknown ISA name, an ISA file that
does not define an ISA, a program that does not assemble -- raises
:class:`TheoryError`.  A command-line front end prints its message as one line
and exits with :attr:`TheoryError.exit_status`; it never shows a traceback.

The package stands alone (it imports nothing else from trapvisor), so this is
not a subclass of the project's ``UserError``; it carries the same two
attributes (``exit_status``, ``hint``) so a front end can treat both alike.
"""


class TheoryError(Exception):
    """A problem with the user's input to the theory tools, shown as one line."""

    exit_status = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint
