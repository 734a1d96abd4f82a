"""scratchnst: Neural Style Transfer written from scratch in NumPy.

    arguments       the checks of every layer's and cost's arguments: float arrays, their shapes, positive ints
    layers          convolution, ReLU, pooling, concatenation: forward and backward, loops and vectorised
    fast_conv       the convolution the networks run: im2col a block of rows at a time, same results
    fast_pool       the pooling the networks run: layers' results to the last bit, a band of rows at a time
    winograd        3x3 stride-1 convolution by F(2x2, 3x3), for fast_conv's wide layers
    tap_planes      a convolution with few output channels, and the input gradient of one with few
                    input channels (an RGB image): one product for all taps, shifted sums
    conv_rows       padded input rows and per-thread scratch buffers of both fast convolutions
    fire_rows       a SqueezeNet fire module's three convolutions by bands of rows, one split for all three
    parallel        a layer's work cut into pieces run at once on the cores BLAS was given
    piece_processes  a split's other pieces in helper processes, no GIL between them (x86-64 Linux)
    shared_arena    the shared memory those helpers map: a split's arrays, a network's weights
    awake_cores     idle-priority spinners that keep a run's cores from halting while its threads wait
    memory_pages    small memory pages for the runs that touch their arrays once (stylize, apply)
    transformer_layers  reflection padding, instance norm, nearest upsampling, residual sum, scaled tanh
    upsample_conv       the network's upsampling layers (upsample, pad, convolve) at the low resolution
    transformer_net  the real-time style network (Johnson 2016): forward, backward by hand, HDF5 files
    training        training that network on a folder of photos; applying it to any photo
    training_processes  training's helper processes (--threads): the other pieces of each batch, their messages
    training_helper     what such a helper process runs
    costs           content, Gram, style, total variation and total costs, with their gradients
    optim           Adam and L-BFGS on a flat vector, with box bounds
    lbfgs_memory    L-BFGS's curvature pairs stacked, H g in two matrix products over them
    optim_state     an optimiser's saved state: what a checkpoint holds, what resume= checks
    architectures   VGG-19 and SqueezeNet 1.1 as data tables: layers, names, weight shapes, minimum sizes
    networks        a pretrained network: activations at named layers, gradients back to the pixels
    weights         HDF5 weight files in and out, finding, downloading, converting
    keras3_layout   Keras 3's weights layout (.weights.h5, .keras): its layers in the model's order, unnamed
    image           load, resize, the preprocessing the weights expect (BGR, means) and its inverse, save
    image_files     image files through Pillow: every mode to RGB, EXIF, JPEG drafts, limits, one-line errors
    settings        each network's defaults, every stylize option checked, the memory a run needs
    transfer        stylize(): the loop the command line, the lessons and the tests all call
    checkpoint      checkpoint files (.npz, no pickle) that --resume continues from
    gradcheck       finite differences, rel_error, the engine of the `scratchnst gradcheck` table
    gradcheck_cases the rows of that table: every layer, every cost, a cost's gradient through a network
    torch_ref       the same layers and costs in PyTorch (NHWC in and out), used only to check ours
    torch_network   the networks and the course's total cost in PyTorch, for gradcheck's chain rows and the bench
    visualize       feature maps as a grid of pictures
    atomic          every file written through a temporary file and a rename
    json_text       the JSON written for other programs: NaN and infinities as null, valid JSON
    cpus            how many CPUs the process may run on (--threads' bound), without NumPy
    errors          UserError and UsageError: one line that says what to do
    cli/            the `scratchnst` command: parsing, stylize, weights, bench, interrupts
    exercises/      `scratchnst exercises`: student copies, self-check and the contained grader

The math modules (arguments, layers, fast_conv, fast_pool, conv_rows, winograd, tap_planes,
fire_rows, transformer_layers, upsample_conv, costs, optim, lbfgs_memory, optim_state) import
nothing but the standard library, NumPy, errors, parallel, piece_processes, shared_arena,
awake_cores and memory_pages (themselves NumPy and the standard library);
cli/ and exercises/ sit at the edge: nothing of the course imports them.
"""

__version__ = "0.1.0"
