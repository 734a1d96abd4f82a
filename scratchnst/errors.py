"""The one exception type for mistakes a user can make (a missing file, a bad image...).

The command line turns a UserError into one line on stderr and a non-zero exit status;
everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; str(error) is one line that says what to do."""
