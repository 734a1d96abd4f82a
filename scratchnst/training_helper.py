"""A helper process of training: the loss and gradients of its piece of every batch (see training_processes)."""

import mmap
import os
import signal

import numpy as np

from scratchnst import networks, training
from scratchnst.training_processes import read_message, write_message


def serve(stdin, stdout):
    """A helper's life: read the setup, then answer each step until stdin closes."""
    kind, values, arrays = read_message(stdin)
    if kind != "setup":
        raise ValueError(f"a helper expected its setup first, got {kind!r}")
    mine = theirs = None
    if values.get("shared_fd") is not None:   # the parent's SharedBuffer: it writes the first half, we the second
        try:
            memory = memoryview(mmap.mmap(values["shared_fd"], values["shared_bytes"]))
            half = values["shared_bytes"] // 2
            theirs, mine = memory[:half], memory[half:]
        except (OSError, ValueError):   # then every array goes through the pipes: the parent is told so below
            mine = theirs = None
    if values.get("core") is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {values["core"]})
        except OSError:   # a core that is not ours to take: stay where the system put us
            pass
    weights = {layer: (arrays[f"{layer}/kernel"], arrays[f"{layer}/bias"]) for layer in values["layers"]}
    network = networks.Network(values["architecture"], weights, pooling=values["pooling"],
                               dtype=np.dtype(values["dtype"]), preprocessing=values["preprocessing"])
    targets = {name: arrays[f"target/{name}"] for name in values["targets"]}
    loss = training.make_loss_function(network, None, values["content_layer"],
                                       [tuple(pair) for pair in values["style_layers"]], values["alpha"],
                                       values["beta"], values["tv_weight"], targets=targets)
    mode = values["preprocessing"]
    write_message(stdout, "ready", {"shared": mine is not None})
    while True:
        try:
            kind, _, arrays = read_message(stdin, theirs)
        except EOFError:
            return
        try:
            if kind != "step":
                raise ValueError(f"a helper expected a step, got {kind!r}")
            # the transformer's parameters and x: (n, H, W, 3 + z) photos, preprocessed, and their noise planes
            params = {name[len("param/"):]: a for name, a in arrays.items() if name.startswith("param/")}
            with np.errstate(over="ignore", invalid="ignore"):   # as the parent: it checks J and the grads
                J, grads, parts = training.loss_and_grads(params, arrays["x"], loss, mode)
        except Exception as error:   # told to the parent, which ends the run with it
            write_message(stdout, "error", {"type": type(error).__name__, "message": str(error)})
            continue
        finally:
            arrays = params = None   # the parent's half is its own again once we answer
        write_message(stdout, "result", {"J": J, "parts": parts}, {f"grad/{n}": g for n, g in grads.items()}, mine)


def main(replies_fd):
    """The helper process (training_processes.HELPER_COMMAND): messages on stdin, replies on `replies_fd`
    (a pipe of its own: stdout goes to the parent's file of what helpers print)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent decides when a run stops
    with os.fdopen(0, "rb", closefd=False) as stdin, os.fdopen(replies_fd, "wb") as replies:
        serve(stdin, replies)
