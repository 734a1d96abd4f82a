"""The `scratchnst` command and its machinery, at the edge of the package.

    parser            argument parsing of every subcommand; `main`, the one-line errors and exit statuses
    stylize_command   `scratchnst stylize`: path checks, progress, snapshots, checkpoints, Ctrl-C, overflow
    weights_commands  `scratchnst weights list | info | download`: what they print
    bench             `scratchnst bench`: one style-transfer step against PyTorch, in worker processes
    bench_quality     its time-to-quality row: stylize against torch.optim.LBFGS on the same problem
    torch_network     the networks in PyTorch, built from a scratchnst Network's arrays, for the bench
    interrupts        Ctrl-C, SIGTERM and SIGHUP: the first stop raises, results are written whole

The course's modules (layers, costs, networks, optim, transfer, ...) never import this package;
it imports them.
"""

from scratchnst.cli.parser import ArgumentParser, build_parser, describe_error, main, path_arg

__all__ = ["ArgumentParser", "build_parser", "describe_error", "main", "path_arg"]
