"""`scratchnst weights list | info | download`: what the weights commands print.

The work is done by `scratchnst.weights` (finding, reading, checking, downloading); this module
only says what was found, what a file holds, and what is being downloaded.
"""

import sys

from scratchnst.errors import UserError
from scratchnst.weights import (FORMAT_VERSION, KNOWN_WEIGHTS, PREPROCESSING, _download_plan, _reject_empty,
                                download, download_command, find_weights, is_file_in, open_problem,
                                parameters_from_file, read_weights, search_dirs)


def run_download(model, dest_dir=None, url=None, stream=None):
    """`scratchnst weights download`: check the options, say what happens, download; exit status 0."""
    out = stream or sys.stdout
    known, url, dest_dir = _download_plan(model, dest_dir, url)
    print(f"downloading {model} from {url} into {dest_dir}", file=out, flush=True)
    print(f"saved {download(model, dest_dir=dest_dir, url=url)}", file=out)
    return 0



def print_list(stream=None):
    """Print the known networks, their files, and where each was found; returns exit status 0."""
    stream = stream or sys.stdout
    width = max(len(known.filename) for known in KNOWN_WEIGHTS.values())
    for model, known in KNOWN_WEIGHTS.items():
        try:
            found = find_weights(model)
        except UserError:
            status = f"missing: get it with {download_command(model)}"
        else:   # found, and worth saying now if it cannot be used, not when a run loads it
            problem = open_problem(found, model)
            status = f"found: {found}" if problem is None else f"found, but unusable: {problem}"
        print(f"{model:<11} {known.filename:<{width}}  {status}", file=stream)
        print(f"{'':<11} {known.about}", file=stream)
    places = ", ".join(_place(description, folder) for description, folder in search_dirs())
    print(f"searched in this order: {places}", file=stream)
    for description, folder in search_dirs():
        if folder is not None and is_file_in(folder.parent, folder.name)[0]:   # a file is no folder to search
            print(f"note: {description} is {folder}, a file, not a folder; set it to the folder that holds the file: "
                  f"{description.lstrip('$')}={folder.parent}", file=stream)
    return 0


def _place(description, folder):
    """How `weights list` names a place searched: its folder, "... (not set)" or "... (cannot be searched: why)"."""
    if folder is None:
        return f"{description} (not set)"
    why = is_file_in(folder, "")[1]   # raises nothing: a folder the user may not enter gives its reason
    return f"{folder} (cannot be searched: {why})" if why else str(folder)


def print_info(path, stream=None):
    """Print a weights file's layout, layers, shapes, parameter count and matching architecture.

    Returns:
        exit status 0 (the file matches a known architecture).

    Raises:
        UserError: the file cannot be read (see `read_weights`), or, after everything else is
            printed, it matches no known architecture (the reason in one line).
    """
    stream = stream or sys.stdout
    _reject_empty(path, "FILE", "give the .h5 weights file to describe")
    weights_file = read_weights(path)
    if weights_file.layout == "keras":
        versions = ", ".join(f"{key} {weights_file.attrs[key]}" for key in ("keras_version", "backend")
                             if key in weights_file.attrs)
        layout = f"Keras-2 weights (layer_names / weight_names){f'; {versions}' if versions else ''}"
    elif weights_file.layout == "keras3":
        version = weights_file.attrs.get("keras_version")
        layout = ("Keras 3 weights (layers/<class>/vars: convolutions matched to the network by their own names, "
                  f"else by order and shapes){f'; keras_version {version}' if version else ''}")
    else:
        layout = f"scratchnst format {FORMAT_VERSION}, converted from {weights_file.attrs.get('converted_from') or '?'}"
    print(f"file:          {weights_file.path}", file=stream)
    print(f"layout:        {layout}", file=stream)
    with_weights = [layer for layer, arrays in weights_file.layers.items() if arrays]
    print(f"layers:        {len(weights_file.layers)}, {len(with_weights)} with weights", file=stream)
    width = max((len(layer) for layer in with_weights), default=0)
    total = 0
    for layer in with_weights:
        shapes = "  ".join(f"{name} {tuple(array.shape)} {array.dtype}"
                           for name, array in zip(weights_file.weight_names[layer], weights_file.layers[layer]))
        total += sum(array.size for array in weights_file.layers[layer])
        origin = weights_file.origins.get(layer)
        print(f"  {layer:<{width}}  {f'{origin}: ' if origin else ''}{shapes}", file=stream)
    print(f"parameters:    {total:,}", file=stream)
    try:
        name, params = parameters_from_file(weights_file)
        match, problem = f"{name} (all {len(params)} convolution layers, expected shapes)", None
    except UserError as error:
        match, problem = "none (the error below says why)", error
    print(f"architecture:  {match}", file=stream)
    mode = weights_file.preprocessing
    print(f"preprocessing: {mode} ({PREPROCESSING.get(mode, 'unknown mode')})", file=stream)
    if problem is not None:
        raise problem
    return 0
