"""The networks of scratchnst in PyTorch, built from a scratchnst Network's own arrays, and the course's
total cost through them: the witnesses of `scratchnst bench` (its step timings, its time-to-quality
row) and of `scratchnst gradcheck`'s chain rows (dJ/dx through the whole network).

Activations here are PyTorch's (N, C, H, W), as its convolutions run fastest; the costs come from
torch_ref (channels_last=False), the one place they are written in PyTorch. torch is imported
when first used.
"""

import numpy as np

from scratchnst import layers, torch_ref
from scratchnst.settings import layers_used


def _torch():
    import torch

    return torch


def torch_available():
    """True if PyTorch can be imported."""
    try:
        _torch()
    except ImportError:
        return False
    return True


def to_nchw(a):
    """(N, H, W, C) NumPy array -> (N, C, H, W) contiguous torch tensor (a copy, writable)."""
    return _torch().from_numpy(np.array(a.transpose(0, 3, 1, 2), order="C"))


class TorchNetwork:
    """The same network in PyTorch (NCHW, OIHW), built from a scratchnst Network's arrays.

    Padding follows the same Keras rules (layers.conv_output_size): symmetric padding goes to
    conv2d's `padding=`, an asymmetric one ('same' with an odd total) to an explicit F.pad.
    """

    def __init__(self, network):
        torch = _torch()
        self.torch = torch
        self.F = torch.nn.functional
        self.arch = network.arch
        self.pooling = network.pooling
        self.params = {
            layer: (torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))),  # (C_out, C_in, KH, KW)
                    torch.from_numpy(np.array(bias)))
            for layer, (kernel, bias) in network.params.items()
        }

    def _pads(self, a, size, stride, padding):
        """(left, right, top, bottom) Keras padding of a (N, C, H, W) tensor."""
        _, top, bottom = layers.conv_output_size(a.shape[2], size, stride, padding)
        _, left, right = layers.conv_output_size(a.shape[3], size, stride, padding)
        return left, right, top, bottom

    def conv_relu(self, layer, spec, a):
        """ReLU(conv2d(a)) of one conv step, a (N, C_in, H, W)."""
        kernel, bias = self.params[layer]
        left, right, top, bottom = self._pads(a, spec.size, spec.stride, spec.padding)
        if (left, top) == (right, bottom):
            z = self.F.conv2d(a, kernel, bias, stride=spec.stride, padding=(top, left))
        else:
            z = self.F.conv2d(self.F.pad(a, (left, right, top, bottom)), kernel, bias, stride=spec.stride)
        return self.F.relu(z, inplace=True)

    def _pool(self, spec, a):
        pads = self._pads(a, spec.size, spec.stride, spec.padding)
        if self.pooling == "max":
            if any(pads):
                a = self.F.pad(a, pads, value=-float("inf"))
            return self.F.max_pool2d(a, spec.size, spec.stride)
        if any(pads):
            raise ValueError("the bench's PyTorch network averages over 'valid' windows only")
        return self.F.avg_pool2d(a, spec.size, spec.stride)

    def forward(self, x, names):
        """{name: activation (N, C, H, W)} for layer names (as the weights file has them, or their aliases)."""
        steps = {name: self.arch.resolve(name) for name in names}
        deepest = max(self.arch.index[step] for step in steps.values())
        acts = {"input": x}
        for step in self.arch.steps[:deepest + 1]:
            inputs = [acts[name] for name in step.inputs]
            if step.op == "conv":
                acts[step.name] = self.conv_relu(step.name, step.spec, inputs[0])
            elif step.op == "pool":
                acts[step.name] = self._pool(step.spec, inputs[0])
            else:
                acts[step.name] = self.torch.cat(inputs, dim=1)
        return {name: acts[step] for name, step in steps.items()}

    def course_cost(self, content_x, style_xs, content_layer, style_layers, style_blend, alpha, beta,
                    tv_weight=0.0):
        """The total cost of `transfer.make_cost_function`, in PyTorch, for autograd to differentiate.

        Args:
            content_x, style_xs: (1, H, W, 3) preprocessed images (NumPy, our layout).
            content_layer, style_layers, style_blend, alpha, beta, tv_weight: as make_cost_function.

        Returns:
            cost(x) -> J (a 0-d tensor) for x (1, 3, H, W): alpha J_content + beta sum_l lambda_l
            J_style_l + tv_weight J_tv, with the content activations and the blended style targets
            computed once, here, as scratchnst computes them.
        """
        torch = self.torch
        style_names = [name for name, _ in style_layers]
        with torch.no_grad():
            a_C = self.forward(to_nchw(content_x), [content_layer])[content_layer]
            targets = {name: 0.0 for name in style_names}
            for w, style_x in zip(style_blend, style_xs):
                acts = self.forward(to_nchw(style_x), style_names)
                for name in style_names:
                    targets[name] = targets[name] + w * torch_ref.style_target(acts[name], channels_last=False)
        wanted = layers_used(content_layer, style_layers)

        def cost(x):
            acts = self.forward(x, wanted)
            J_style = 0.0
            for name, lam in style_layers:
                J_style = J_style + lam * torch_ref.layer_style_cost_from_target(targets[name], acts[name],
                                                                                 channels_last=False)
            J = alpha * torch_ref.content_cost(a_C, acts[content_layer]) + beta * J_style
            if tv_weight:
                J = J + tv_weight * torch_ref.total_variation_cost(x, channels_last=False)
            return J

        return cost

    def training_loss(self, style_x, content_layer, style_layers, alpha, beta, tv_weight=0.0):
        """The training loss of `training.make_loss_function`, in PyTorch, for autograd to differentiate.

        Args:
            style_x: (1, H_S, W_S, 3) preprocessed style image (NumPy, our layout).
            content_layer, style_layers, alpha, beta, tv_weight: as make_loss_function.

        Returns:
            loss(out, x) -> J (0-d tensor) for out and x (N, 3, H, W): the mean over the batch of
            alpha J_content(a_C(x_i), a_G(out_i)) + beta sum_l lambda_l J_style_layer(S, out_i)
            + tv_weight J_tv(out_i), with the content activations a_C taken without gradient.
        """
        torch = self.torch
        style_names = [name for name, _ in style_layers]
        with torch.no_grad():
            acts = self.forward(to_nchw(style_x), style_names)
            targets = {name: torch_ref.style_target(acts[name], channels_last=False) for name in style_names}
        wanted = layers_used(content_layer, style_layers)

        def loss(out, x):
            with torch.no_grad():
                a_C = self.forward(x, [content_layer])[content_layer]
            acts = self.forward(out, wanted)
            J = 0.0
            for i in range(out.shape[0]):
                J_style = sum(lam * torch_ref.layer_style_cost_from_target(targets[name], acts[name][i:i + 1],
                                                                          channels_last=False)
                              for name, lam in style_layers)
                J = J + alpha * torch_ref.content_cost(a_C[i:i + 1], acts[content_layer][i:i + 1]) + beta * J_style
                if tv_weight:
                    J = J + tv_weight * torch_ref.total_variation_cost(out[i:i + 1], channels_last=False)
            return J / out.shape[0]

        return loss

    def step(self, x, grads):
        """One step: dJ/dx (N, 3, H, W) for x (N, 3, H, W) and {layer name: dJ/da (N, C, H, W)}."""
        x = x.detach().requires_grad_()
        names = list(grads)
        acts = self.forward(x, names)
        (dx,) = self.torch.autograd.grad([acts[name] for name in names], [x], [grads[name] for name in names])
        return dx


class TorchTransformer:
    """The real-time style network of `transformer_net` in PyTorch, NCHW, as PyTorch code would write it.

    torch_ref.transformer_net is the checking twin (our layout at every layer, so that each layer
    can be compared); this one is for timing, the bench's training-step row: native NCHW tensors,
    OIHW kernels made once, no permutes. The parameters are leaf tensors with requires_grad, so
    that a backward pass gives every parameter's gradient, as training needs.
    """

    def __init__(self, params, preprocessing="caffe", eps=1e-5):
        from scratchnst import transformer_net

        torch = _torch()
        self.torch, self.F, self.eps = torch, torch.nn.functional, eps
        self.params = {}
        for name, p in params.items():
            a = np.ascontiguousarray(p.transpose(3, 2, 0, 1)) if name.endswith("/kernel") else np.array(p)
            self.params[name] = torch.from_numpy(a).requires_grad_()
        scale, offset = transformer_net.output_range(preprocessing, next(iter(params.values())).dtype)
        self.scale = torch.from_numpy(np.asarray(scale).reshape(1, 3, 1, 1))
        self.offset = torch.from_numpy(np.asarray(offset).reshape(1, 3, 1, 1))
        self.blocks = sorted({n.split("/")[0] for n in params if n.startswith("res")}, key=lambda s: int(s[3:]))

    def _conv(self, h, layer, stride=1, bias=False):
        w = self.params[f"{layer}/kernel"]
        pad = w.shape[2] // 2
        h = self.F.pad(h, (pad, pad, pad, pad), mode="reflect")
        return self.F.conv2d(h, w, self.params[f"{layer}/bias"] if bias else None, stride=stride)

    def _conv_in(self, h, layer, stride=1, relu=True):
        h = self.F.instance_norm(self._conv(h, layer, stride), weight=self.params[f"{layer}/gamma"],
                                 bias=self.params.get(f"{layer}/beta"), eps=self.eps)
        return self.F.relu(h) if relu else h

    def forward(self, x):
        """(N, 3 + z, H, W), photos and their noise planes -> (N, 3, H, W), in the loss network's preprocessed space."""
        h = self._conv_in(x, "conv1")
        h = self._conv_in(h, "conv2", stride=2)
        h = self._conv_in(h, "conv3", stride=2)
        for block in self.blocks:
            h = h + self._conv_in(self._conv_in(h, f"{block}/conv1"), f"{block}/conv2", relu=False)
        h = self._conv_in(self.F.interpolate(h, scale_factor=2, mode="nearest"), "up1")
        h = self._conv_in(self.F.interpolate(h, scale_factor=2, mode="nearest"), "up2")
        return self.torch.tanh(self._conv(h, "conv_out", bias=True)) * self.scale + self.offset

    def training_step(self, x, loss):
        """The gradients of every parameter for loss(forward(x), photos), x (N, 3 + z, H, W) the photos
        and the network's z noise planes (transformer_net.network_input): {name: tensor}."""
        for p in self.params.values():
            p.grad = None
        J = loss(self.forward(x), x[:, :3])
        J.backward()
        return float(J.detach()), {name: p.grad for name, p in self.params.items()}
