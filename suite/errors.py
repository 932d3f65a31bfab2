"""The one error type for a user's mistake: the CLI prints its message on one line, exit code 2."""


class UserError(ValueError):
    """Bad input the user can fix; the message names the field, node or device and the fix."""
