"""The one exception type a user sees.

A `UserError` carries a one-line message that names the field or file, what was wrong and what is
accepted. The command line prints it without a traceback and exits with code 2; everything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a spec, a path, a checkpoint, a data root."""

    exit_code = 2
