"""The `scratchnst` command and its machinery, at the edge of the package.

    parser            argument parsing of every subcommand; `main`, the one-line errors and exit statuses
    gradcheck_command `scratchnst gradcheck`: the table, --only, --json, and --package on a student copy
    stylize_command   `scratchnst stylize`: path checks, progress, snapshots, checkpoints, Ctrl-C, overflow
    weights_commands  `scratchnst weights list | info | download`: what they print
    bench             `scratchnst bench`: one style-transfer step against PyTorch, in worker processes
    bench_quality     its time-to-quality row: stylize against torch.optim.LBFGS on the same problem
    bench_training    its training-step row: a real-time style network's step against PyTorch's
    train_command     `scratchnst train` and `scratchnst apply`: a real-time style network, trained and used
    interrupts        Ctrl-C, SIGTERM and SIGHUP: the first stop raises, results are written whole
    streams           stdout that cannot be written ends the command in one line; stderr writes that fail are dropped

The course's modules (layers, costs, networks, optim, transfer, ...) never import this package;
it imports them.
"""

from scratchnst.cli.parser import ArgumentParser, build_parser, describe_error, main, path_arg

__all__ = ["ArgumentParser", "build_parser", "describe_error", "main", "path_arg"]
