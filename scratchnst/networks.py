"""A pretrained CNN with fixed weights: activations at named layers, gradients back to the pixels.

`load` finds and reads a weights file (`scratchnst.weights`) and returns a `Network`, which runs
the steps of its architecture's table (`scratchnst.architectures`) with the fast convolution of
`scratchnst.fast_conv` and the pooling of `scratchnst.fast_pool` (the results of `scratchnst.layers`):

    net = load("vgg19")                                  # or "squeezenet", or a path to an .h5 file
    x = image.preprocess(content, net.preprocessing)     # (1, H, W, 3)
    acts = net.forward(x, ["conv4_2", "block1_conv1"])   # {name: (1, H_l, W_l, C_l)}
    dx = net.backward({"conv4_2": d_conv4_2, "block1_conv1": d_block1_conv1})   # (1, H, W, 3)

Layer names are those of `scratchnst.architectures` (the file's, the course's, Keras's ReLU
names). The activation of a convolution is taken after its ReLU, as Keras's
Conv2D(activation="relu") gives it.
"""

import copy
from pathlib import Path

import numpy as np

from scratchnst import fast_conv, fast_pool, fire_rows, layers, parallel
from scratchnst import weights as weights_io
from scratchnst.architectures import ARCHITECTURES, POOLINGS, SQUEEZENET, VGG19, parameter_problem  # noqa: F401
from scratchnst.errors import UsageError, UserError
from scratchnst.image import PREPROCESSING
from scratchnst.weights import parameters_from_file  # noqa: F401  (lessons read files through it)


# The file `find_weights` looks for, per network (see scratchnst.weights.KNOWN_WEIGHTS).
DEFAULT_WEIGHTS_FILES = {name: known.filename for name, known in weights_io.KNOWN_WEIGHTS.items()}


def load(name_or_path, weights=None, pooling="max", dtype=np.float32):
    """Load a pretrained network.

    Args:
        name_or_path: "vgg19" or "squeezenet" (the file is found by weights.find_weights), or the
            path of an HDF5 weights file (Keras-2 or scratchnst layout) whose architecture is
            detected from its layers.
        weights: with a name, the weights file to use instead of searching (--weights FILE).
        pooling: "max" (as the networks were trained) or "avg" (Gatys et al.: smoother gradients).
        dtype: np.float32 (default) or np.float64 (gradient checks); weights, activations and
            gradients all have it.

    Returns:
        Network.

    Raises:
        UsageError: an unknown network name or pooling.
        UserError: file not found (naming where it looked and the download command), or a bad
            weights file (naming the file and the layer, and saying what to do).
    """
    if pooling not in POOLINGS:
        raise UsageError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if str(name_or_path) in ARCHITECTURES:
        wanted = str(name_or_path)
        path = weights_io.find_weights(wanted, explicit=weights)
    else:
        if weights is not None:
            raise ValueError("give the weights file either as name_or_path or as weights=, not both")
        path = Path(name_or_path)
        if not path.exists() and not path.suffix:
            raise UsageError(f"unknown network {str(name_or_path)!r}: choose {' or '.join(ARCHITECTURES)}, "
                             "or give the path of an HDF5 weights file")
        wanted = None
    weights_file = weights_io.read_weights(path, model=wanted)
    name, params = parameters_from_file(weights_file, wanted)
    return Network(name, params, pooling=pooling, dtype=dtype,
                   preprocessing=weights_file.preprocessing, path=path)


# --------------------------------------------------------------------------------- network
def _native(array, dtype):
    """array in dtype's native byte order if it holds dtype's numbers in the other one (a big-endian
    '>f4' read from a file: the same float32 values), else array itself."""
    if array.dtype != dtype and array.dtype.newbyteorder("=") == dtype:
        return array.astype(dtype)
    return array


def _read_only(array):
    """A view of array that cannot be written through (the array itself stays writable)."""
    view = array.view()
    view.flags.writeable = False
    return view


class Network:
    """A CNN with fixed weights: activations at named layers, gradients back to the pixels.

    Attributes:
        name: "vgg19" or "squeezenet".
        arch: its Architecture (steps, aliases, weight shapes, minimum sizes per layer).
        path: the weights file it came from, or None.
        dtype: of weights, activations and gradients (float32 by default; float64 for checks).
        pooling: "max" or "avg".
        preprocessing: the `image.preprocess` mode its weights expect ("caffe" or "torchvision").
        layer_names: every layer's name in forward order (conv layers, pools, fire modules'
            squeeze1x1, expand1x1, expand3x3 and concat).
        min_input_size: the smallest height and width for which every layer's output is non-empty
            (VGG-19: 32, five 2x2 pools; SqueezeNet: 31; Keras asks 48 of SqueezeNet, more than
            its layers need). `min_input_size_for(layers)` answers for the layers you use.
        params: {conv layer: (kernel (KH, KW, C_in, C_out), bias (C_out,))}, read-only.

    Memory: `forward` keeps, until the next `forward`, what `backward` needs: each conv layer's
    input and ReLU output and each max pool's argmax (uint8, a quarter of its float32 output).
    The ReLU output of one layer is the input of the next, held once, so this costs about one
    copy of every activation computed (a fire module's concatenation adds a second copy of its
    two branches). For VGG-19 on one 400x400 float32 image run through block5_conv4 that is about
    215 MB; `cache_nbytes()` measures it. Intermediate gradients live only during `backward`.
    """

    def __init__(self, architecture, params, pooling="max", dtype=np.float32, preprocessing="caffe", path=None):
        """Build a network from arrays.

        Args:
            architecture: "vgg19" or "squeezenet".
            params: {conv layer: (kernel, bias)} with the shapes `ARCHITECTURES[...].weight_shapes` gives.
            pooling, dtype: see `load`.
            preprocessing: "caffe" or "torchvision".
            path: the file the weights came from, for messages.
        """
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        # float16 would run (NumPy has it) but its gradients are off by percents; longdouble gains nothing
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be np.float32 (to run) or np.float64 (to check gradients), got {dtype!r}")
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {sorted(PREPROCESSING)}, got {preprocessing!r}")
        problem = parameter_problem(architecture, params)
        if problem:
            raise ValueError(problem)
        self.arch = ARCHITECTURES[architecture]
        self.name = architecture
        self.path = None if path is None else Path(path)
        self.dtype = np.dtype(dtype)
        self.pooling = pooling
        self.preprocessing = preprocessing
        self.layer_names = self.arch.layer_names
        self.min_input_size = max(self.arch.min_input_sizes.values())
        # in memory the helper processes of a split map, where they may be used (`parallel.shared_copy`)
        self.params = {layer: tuple(_read_only(parallel.shared_copy(np.array(a, dtype=self.dtype)))
                                    for a in params[layer])
                       for layer in self.arch.weight_shapes}
        # A fire module's branches, written straight into their concatenation:
        # {branch step: (concat step, first channel, last channel + 1)} and {concat step: channels}.
        self._branches, self._widths = {}, {}
        out_channels = {step.name: step.kernel_shape[-1] for step in self.arch.steps if step.op == "conv"}
        for step in self.arch.steps:
            if step.op == "concat":
                bounds = np.cumsum([0] + [out_channels[name] for name in step.inputs])
                self._widths[step.name] = int(bounds[-1])
                for name, start, stop in zip(step.inputs, bounds[:-1], bounds[1:]):
                    self._branches[name] = (step.name, int(start), int(stop))
        # The fire modules run as one (`fire_rows`): {squeeze step name: (squeeze, expand1, expand3
        # steps, concat name)} and {concat name: squeeze step name}.
        steps = {step.name: step for step in self.arch.steps}
        self._fires, self._fire_of_concat = {}, {}
        for step in self.arch.steps:
            if step.op == "concat" and len(step.inputs) == 2:
                expand1, expand3 = (steps[name] for name in step.inputs)
                if expand1.op == expand3.op == "conv" and expand1.inputs[0] in steps:
                    squeeze = steps[expand1.inputs[0]]
                    if squeeze.op == "conv" and fire_rows.can_fuse(squeeze, expand1, expand3):
                        self._fires[squeeze.name] = (squeeze, expand1, expand3, step.name)
                        self._fire_of_concat[step.name] = squeeze.name
        self._caches = None  # {step name: cache} of the last forward
        self._shapes = None  # {step name: activation shape} of the last forward

    def __repr__(self):
        return (f"Network({self.name!r}, pooling={self.pooling!r}, dtype={self.dtype.name}, "
                f"weights={str(self.path) if self.path else None!r})")

    def sibling(self):
        """The same network with caches of its own, for another thread to run at the same time.

        forward keeps its caches on the network for backward, so two threads cannot share one
        network; the sibling shares the weights (read-only arrays, not copied) and nothing else.
        """
        twin = copy.copy(self)
        twin._caches = twin._shapes = None
        return twin

    def min_input_size_for(self, layers_wanted):
        """The smallest height and width giving every layer in `layers_wanted` a non-empty output."""
        return max(self.arch.min_input_sizes[self.arch.resolve(layer)] for layer in layers_wanted)

    # ------------------------------------------------------------------------- forward
    def forward(self, x, layers_wanted):
        """Run the network on x, only as deep as the deepest layer asked for; keep the caches.

        Args:
            x: (N, H, W, 3), preprocessed (`image.preprocess(..., self.preprocessing)`), dtype
                self.dtype. Not written to, and kept (the first conv's cache holds it).
            layers_wanted: layer names (any of their names, see the module docstring), or one name.

        Returns:
            {name as given: activation (N, H_l, W_l, C_l)}, read-only; conv activations are after
            the ReLU.

        Raises:
            UsageError: an unknown layer name.
            UserError: an image smaller than the deepest layer needs.
            TypeError: x does not have the network's dtype.
        """
        if isinstance(layers_wanted, str):
            layers_wanted = [layers_wanted]
        x = _native(np.asarray(x), self.dtype)
        if x.ndim != 4 or x.shape[3] != 3:
            raise ValueError(f"x must be (N, H, W, 3), got {x.shape}")
        if x.dtype != self.dtype:
            if x.dtype.kind != "f":  # pixels as read (uint8 0..255): no network runs in integers
                raise TypeError(f"x is {x.dtype} but the network is {self.dtype}; preprocess each image "
                                f"first: scratchnst.image.preprocess(img, network.preprocessing) gives floats")
            raise TypeError(f"x is {x.dtype} but the network is {self.dtype}; cast x, or load the network "
                            f"with dtype=np.{x.dtype}")
        targets = {layer: self.arch.resolve(layer) for layer in layers_wanted}
        if not targets:
            return {}
        deepest = max(targets.values(), key=self.arch.index.get)
        self._check_size(x.shape[1], x.shape[2], targets.values())

        self._caches = self._shapes = None  # free the last forward's caches before making new ones
        activations, caches, joined = {"input": x}, {}, {}
        last = self.arch.index[deepest]
        done = set()  # the expands of fire modules run whole
        for step in self.arch.steps[:last + 1]:
            if step.name in done:
                continue
            fire = self._fires.get(step.name)
            if fire is not None and self.arch.index[fire[3]] <= last:
                self._fire_forward(fire, activations, caches, joined)
                done.update((fire[1].name, fire[2].name))
                continue
            out, caches[step.name] = self._step_forward(step, [activations[name] for name in step.inputs], joined)
            activations[step.name] = out
        self._caches = caches
        self._shapes = {name: a.shape for name, a in activations.items()}
        return {layer: _read_only(activations[name]) for layer, name in targets.items()}

    def _check_size(self, H, W, names):
        """UserError if an H x W input leaves any of the layers `names` without output."""
        hungriest = max(names, key=self.arch.min_input_sizes.get)
        need = self.arch.min_input_sizes[hungriest]
        if min(H, W) < need:
            raise UserError(f"the image is {H}x{W} pixels, but layer {hungriest} of {self.name} needs at least "
                            f"{need}x{need}; use a larger image")

    def _step_forward(self, step, inputs, joined):
        """(activation, cache) of one step; conv caches hold (conv cache, ReLU cache).

        `joined` holds the concatenations being filled: a fire module's two branches are written
        straight into their channels of it (`_branches`), so that joining them copies nothing.
        """
        if step.op == "conv":
            kernel, bias = self.params[step.name]
            into = None
            if step.name in self._branches:
                concat, start, stop = self._branches[step.name]
                if concat not in joined:
                    H_out = layers.conv_output_size(inputs[0].shape[1], kernel.shape[0], step.spec.stride,
                                                    step.spec.padding)[0]
                    W_out = layers.conv_output_size(inputs[0].shape[2], kernel.shape[1], step.spec.stride,
                                                    step.spec.padding)[0]
                    joined[concat] = parallel.empty((inputs[0].shape[0], H_out, W_out, self._widths[concat]),
                                                    self.dtype)
                into = joined[concat][..., start:stop]
            return fast_conv.conv2d_relu_forward(inputs[0], kernel, bias, step.spec.stride, step.spec.padding, into)
        if step.op == "pool":
            pool = fast_pool.max_pool_forward if self.pooling == "max" else fast_pool.avg_pool_forward
            return pool(inputs[0], step.spec.size, step.spec.stride, step.spec.padding)
        # the branches have written themselves into it (the same as layers.concat_forward(inputs))
        return joined.pop(step.name), (tuple(a.shape[-1] for a in inputs), -1)

    def _fire_forward(self, fire, activations, caches, joined):
        """A fire module's three convolutions at once (`fire_rows`); their caches as _step_forward makes them."""
        squeeze, expand1, expand3, concat = fire
        x = activations[squeeze.inputs[0]]
        N, H, W, _ = x.shape
        joined[concat] = parallel.empty((N, H, W, self._widths[concat]), self.dtype)
        s = fire_rows.fire_forward(x, self.params[squeeze.name], self.params[expand1.name],
                                   self.params[expand3.name], joined[concat])
        E1 = expand1.kernel_shape[3]
        activations[squeeze.name] = s
        activations[expand1.name] = joined[concat][..., :E1]
        activations[expand3.name] = joined[concat][..., E1:]
        for step, source in ((squeeze, x), (expand1, s), (expand3, s)):
            kernel, bias = self.params[step.name]
            caches[step.name] = ((source, kernel, bias, 1, step.spec.padding), activations[step.name])

    # ------------------------------------------------------------------------ backward
    def backward(self, grads):
        """Back-propagate gradients given at several layers to the input pixels, in one pass.

        Args:
            grads: {layer name: dJ/da}, each the shape of that layer's activation in the last
                forward (which must have computed it) and of dtype self.dtype. Not written to.
                A value may also be a function of no arguments that returns the gradient: it is
                called when the pass first needs that layer's gradient (a gradient still being
                computed on another core, `transfer.make_cost_function`), and the result is the same
                as if it had been given.

        Returns:
            dJ/dx, (N, H, W, 3), dtype self.dtype; J is the sum of the costs at all the layers.

        Walks the steps from the deepest one with a gradient down to the input. A step's gradient
        is the one given for it (if any) plus what flows back from the steps reading it; a fire
        module's squeeze output adds up its two branches'. Convolutions skip dw and db: the
        weights are fixed, only the pixels change.
        """
        if self._caches is None:
            raise RuntimeError("call forward before backward")
        given = {}  # step name -> [(layer as named, gradient or function)], in the order given
        for layer, grad in grads.items():
            name = self.arch.resolve(layer)
            if name not in self._caches:
                raise ValueError(f"layer {layer!r} was not computed by the last forward; ask forward for it")
            given.setdefault(name, []).append((layer, grad if callable(grad) else self._checked(layer, name, grad)))
        if not given:
            return np.zeros(self._shapes["input"], dtype=self.dtype)

        pending = {}  # step name -> dJ/d(its output) gathered so far

        def touch(name):  # the gradient given at `name` joins pending the first time the pass reaches it
            parts = given.pop(name, None)
            if parts:
                total = None
                for layer, grad in parts:
                    grad = self._checked(layer, name, grad()) if callable(grad) else grad
                    total = grad if total is None else total + grad
                pending[name] = total

        deepest = max(given, key=self.arch.index.get)
        owned = set()  # names whose pending gradient is an array made here, free to add into
        for step in reversed(self.arch.steps[:self.arch.index[deepest] + 1]):
            touch(step.name)
            dout = pending.pop(step.name, None)
            if dout is None:
                continue  # nothing flows back through this step (e.g. above every gradient given)
            fire = self._fires.get(self._fire_of_concat.get(step.name))
            if (fire is not None and fire[1].name in self._caches
                    and not {fire[1].name, fire[2].name} & (set(pending) | set(given))):
                # a whole fire module at once (`fire_rows`), unless gradients were given at its expands
                touch(fire[0].name)
                step, inputs = fire[0], [self._fire_backward(fire, dout, pending.pop(fire[0].name, None))]
            else:
                inputs = self._step_backward(step, dout, self._caches[step.name])
            for source, dx in zip(step.inputs, inputs):
                touch(source)
                if source not in pending:
                    pending[source] = dx  # a convolution's or pool's dx is fresh; a concat's is a view
                    if step.op != "concat":
                        owned.add(source)
                elif source in owned:
                    pending[source] += dx  # a fire module's squeeze output: its two branches' sum
                elif step.op != "concat":  # dx is fresh: add the caller's gradient into it (a + b == b + a)
                    dx += pending[source]
                    pending[source] = dx
                    owned.add(source)
                else:  # never add into a caller's gradient or a view of another step's
                    pending[source] = pending[source] + dx
                    owned.add(source)
        return pending["input"]

    def _checked(self, layer, name, grad):
        """grad as an array, or ValueError / TypeError if it does not fit the activation of step `name`."""
        grad = _native(np.asarray(grad), self.dtype)
        if grad.shape != self._shapes[name]:
            raise ValueError(f"gradient for {layer!r} has shape {grad.shape}, its activation {self._shapes[name]}")
        if grad.dtype != self.dtype:
            raise TypeError(f"gradient for {layer!r} is {grad.dtype} but the network is {self.dtype}")
        return grad

    def _fire_backward(self, fire, dout, ds_given):
        """dJ/d(a fire module's input) from dJ/d(its output) (and one given at its squeeze output, or None)."""
        squeeze, expand1, expand3, _ = fire
        (x, *_), s = self._caches[squeeze.name]
        return fire_rows.fire_backward(dout, x.shape, self.params[squeeze.name], self.params[expand1.name],
                                       self.params[expand3.name], s, self._caches[expand1.name][1],
                                       self._caches[expand3.name][1], ds_given)

    def _step_backward(self, step, dout, cache):
        """Gradients with respect to each of a step's inputs, in the order of step.inputs."""
        if step.op == "conv":
            return [fast_conv.conv2d_relu_backward(dout, cache)]
        if step.op == "pool":
            pool_backward = fast_pool.max_pool_backward if self.pooling == "max" else fast_pool.avg_pool_backward
            return [pool_backward(dout, cache)]
        # views of dout, not layers.concat_backward's copies: each branch's ReLU backward makes a
        # fresh array of it at once, and nothing here writes into a gradient it was given
        sizes, _ = cache
        bounds = np.cumsum((0,) + sizes)
        return [dout[..., start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]

    def cache_nbytes(self):
        """Bytes held by the caches of the last forward (each array once; views count as their base).

        The weights, which conv caches also point to, are not counted.
        """
        if self._caches is None:
            return 0
        weights_ids = {id(_base(a)) for pair in self.params.values() for a in pair}
        seen = {}

        def visit(obj):
            if isinstance(obj, np.ndarray):
                base = _base(obj)
                if id(base) not in weights_ids:
                    seen[id(base)] = base.nbytes
            elif isinstance(obj, (tuple, list)):
                for item in obj:
                    visit(item)

        visit(list(self._caches.values()))
        return sum(seen.values())


def _base(array):
    """The array that owns the memory a view looks into."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array
