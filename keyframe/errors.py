"""The one exception type whose message is shown to the user as a one-line error."""


class UserError(Exception):
    """Bad input from the user: the message names the file/field and what was expected."""
