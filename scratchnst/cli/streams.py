"""The command's standard streams when they cannot be written: a closed, full or broken terminal.

What the command prints is of two kinds. Its standard output is a result (a table, a report, the
settings of a run): when it cannot be written, the command ends with one line saying so, not an
internal error. Its standard error carries progress and messages: a progress line that cannot be
written must not stop a run of minutes, so writes that fail there are dropped. A stream that is
closed when the command starts (`2>&-`) is opened on /dev/null first, so that no file the command
opens later takes its number and receives what was meant for it. What a stream's encoding cannot
show (a file name in ASCII) is written escaped.
"""

import os
import sys

from scratchnst.errors import UserError


class _Stream:
    """A text stream's stand-in: its writes and flushes either pass, or fail as `on_error` decides."""

    def __init__(self, stream, on_error):
        self._stream, self._on_error = stream, on_error

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise   # the reader went away (`| head`): the command's own handling
        except UnicodeEncodeError:
            # A file name the stream's encoding cannot show (PYTHONIOENCODING=ascii, a Windows code page):
            # escaped, \xfc, as Python's own stderr shows it, rather than the run stopped for it.
            encoding = getattr(self._stream, "encoding", None) or "ascii"
            self.write(text.encode(encoding, "backslashreplace").decode(encoding, "replace"))
            return len(text)
        except (OSError, ValueError) as error:   # ValueError: the stream was closed
            return self._on_error(error, len(text))

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as error:
            self._on_error(error, 0)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _output_failed(error, _):
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    raise UserError(f"cannot write to standard output ({reason}); send it to a file or folder with space "
                    "(scratchnst ... > report.txt), or let it print to the terminal")


def _dropped(error, size):
    return size   # a progress line or a message that could not be shown: the work goes on


def guard():
    """Install the stand-ins on sys.stdout and sys.stderr (the real command only, not a test's call of main)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:   # closed: /dev/null in its place, at that number
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")
    if not isinstance(sys.stdout, _Stream):
        sys.stdout = _Stream(sys.stdout, _output_failed)
    if not isinstance(sys.stderr, _Stream):
        sys.stderr = _Stream(sys.stderr, _dropped)
