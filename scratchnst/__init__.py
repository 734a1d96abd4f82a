"""scratchnst: Neural Style Transfer written from scratch in NumPy.

Modules, one idea each:
    layers     convolution, ReLU, pooling, concatenation: forward and backward
    gradcheck  finite differences, rel_error, the `scratchnst gradcheck` table
    torch_ref  the same layers in PyTorch (NCHW), used only to check ours
    weights    HDF5 weight files in and out, download, conversion
    networks   VGG-19 and SqueezeNet 1.1 as data tables; forward/backward to the pixels
    image      load, resize, preprocess (the only place that knows BGR and the means), save
    costs      content, Gram, style, total variation and total costs with their gradients
    optim      Adam and L-BFGS on the flat pixel vector
    transfer   stylize(): the loop the command line, the lessons and the tests all call
    visualize  feature maps as a grid of pictures
    bench      `scratchnst bench`: one style-transfer step against PyTorch, side by side
    exercises  `scratchnst exercises`: student copies and the autograder (exercise_*.py)
    cli        argument parsing for the `scratchnst` command
"""

__version__ = "0.1.0"
