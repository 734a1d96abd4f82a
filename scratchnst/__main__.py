"""`python -m scratchnst` and the `scratchnst` command (its console script is `run`).

`run` imports the command line itself: a Ctrl-C while the modules load, before `main` has its own
handling in place, then ends in the same one line and exit status as a Ctrl-C later on.
"""

import sys

INTERRUPTED = 130   # cli.interrupts.INTERRUPTED: 128 + SIGINT, as a shell reports a Ctrl-C


def run():
    """The `scratchnst` command: cli.main's exit status."""
    try:
        from scratchnst.cli import main

        return main()
    except KeyboardInterrupt as stop:
        if hasattr(stop, "exit_status"):
            return _debugged(stop)
        # only before main took over: main reports its own
        print("scratchnst: interrupted (Ctrl-C) while starting; nothing was written", file=sys.stderr)
        return INTERRUPTED


def _debugged(stop):
    """A stop main's handling raised and let through for --debug: its traceback, and its own exit status.

    cli.interrupts marks the stops it raises with `exit_status` (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP);
    they are no Ctrl-C while starting, and a SIGTERM must not end in a Ctrl-C's status.
    """
    import traceback

    traceback.print_exception(type(stop), stop, stop.__traceback__)   # Python 3.9 takes no single argument
    return stop.exit_status


if __name__ == "__main__":
    sys.exit(run())
