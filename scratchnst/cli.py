"""The `scratchnst` command: argument parsing only.

Each subcommand has a `_add_<name>(subparsers)` function here that declares its flags and
points `func` at the function in the package that does the work. `main` turns mistakes a
user can make (UserError), Ctrl-C and broken pipes into one line and a non-zero exit status.
"""

import argparse
import sys

from scratchnst import __version__
from scratchnst.errors import UserError


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every default and keeps the descriptions' line breaks."""


# --------------------------------------------------------------------------- gradcheck
def _add_gradcheck(sub):
    p = sub.add_parser(
        "gradcheck",
        help="check every layer's backward pass against finite differences and PyTorch",
        description="Check every layer and configuration: the analytic gradient against centred "
        "finite differences (float64) and against PyTorch autograd when torch is installed. "
        "Exit status 1 if any row fails.",
        formatter_class=_Formatter,
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns even if torch is installed")

    def run(args):
        from scratchnst.gradcheck import run_gradcheck

        return run_gradcheck(seed=args.seed, use_torch=not args.no_torch)

    p.set_defaults(func=run)


# ----------------------------------------------------------------------- subcommands
# Other subcommands (weights, stylize, bench, exercises) register below.


_SUBCOMMANDS = [_add_gradcheck]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="scratchnst",
        description="Neural Style Transfer from scratch in NumPy.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"scratchnst {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv=None):
    """Entry point of the `scratchnst` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except UserError as error:
        print(f"scratchnst: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scratchnst: interrupted (Ctrl-C); no output was written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    return int(status or 0)
