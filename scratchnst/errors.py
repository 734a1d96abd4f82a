"""The exceptions for mistakes a user can make, and the exit status each one ends in.

The command line and the lessons turn these into one line on stderr and an exit status; anything
else is a bug (shown as one line too, with --debug giving the traceback).

    UserError    a problem with the world the command works on: a missing or broken file, a
                 folder that cannot be written, a cost that overflowed. Exit status 1.
    UsageError   the command itself is wrong: an unknown layer name, a number that does not
                 parse, options that contradict each other. Exit status 2, as argparse uses.
"""

import errno
import os


class UserError(Exception):
    """A problem the user can fix; str(error) is one line that names the thing and says what to do."""

    exit_status = 1


class UsageError(UserError):
    """The command line is wrong (a bad option value, an unknown name); exit status 2."""

    exit_status = 2


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal other than Ctrl-C (SIGTERM, SIGHUP), handled like Ctrl-C.

    A KeyboardInterrupt, so that everything that saves its work on Ctrl-C does so here too;
    `how` names the signal for the message and `exit_status` is 128 + its number, as shells report.
    """

    def __init__(self, how, exit_status):
        super().__init__(how)
        self.how = how
        self.exit_status = exit_status


def debug_requested():
    """True when $SCRATCHNST_DEBUG asks for tracebacks: any value but empty, 0, no, false or off."""
    return os.environ.get("SCRATCHNST_DEBUG", "").strip().lower() not in ("", "0", "no", "false", "off")


# What to do about an OSError that names a file and reached the top without a message of its own:
# the places a command checks before working have their own lines; these are for the rest.
_OS_ERROR_ADVICE = {
    errno.EACCES: "check the permissions of that path and of the folders above it",
    errno.EPERM: "check the permissions of that path and of the folders above it",
    errno.ENOSPC: "free some space, or choose another place",
    errno.EDQUOT: "free some space, or choose another place",
    errno.EROFS: "that file system is read-only: choose another place",
}


def os_error_line(error):
    """The one line for an OSError that names a file: "PATH: Permission denied; check ..."."""
    line = f"{error.filename}: {error.strerror or error}"
    advice = _OS_ERROR_ADVICE.get(error.errno)
    return f"{line}; {advice}" if advice else line
