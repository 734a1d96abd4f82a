"""Lesson 8: optimisers: gradient descent, Adam and L-BFGS on the same stylisation.

Run it:   python lessons/08_optimisers.py         (about a minute; pictures go to lessons/out/)
Makes:    08_results.png      the same stylisation after the same number of iterations of each
          08_optimisers.png   the cost against the iteration and against the seconds (needs matplotlib)
Needs:    pretrained weights.
"""

# %%
import time

import numpy as np

import _lesson
from scratchnst import image, optim, transfer

args = _lesson.parse_args(__doc__, size=192, iters=80)
rng = np.random.default_rng(args.seed)

# %% [markdown]
# ## Goal
#
# Lesson 7 gave J(x) and dJ/dx. Style transfer is now plain optimisation over the pixels: about
# 74,000 unknowns at 192 px (128 x 192 x 3), 480,000 at 400 x 400. This lesson runs three
# optimisers on exactly the same problem, from the same start, and compares how far each gets
# per iteration and per second:
#
# - gradient descent:  x <- x - lr * dJ/dx. One evaluation per step. Its step is proportional to
#   the gradient, so lr must match the cost's scale, which changes with alpha, beta, the layers
#   and the image: a good lr for one problem is too large or too small for the next.
# - Adam (the course's choice):  steps by a running mean of the gradient divided by a running
#   root-mean-square of it, so every pixel moves about lr grey levels per step, whatever the
#   cost's scale. One evaluation per step.
# - L-BFGS (Gatys et al.'s choice): builds an estimate of the curvature from the last few steps
#   and takes quasi-Newton steps, with a line search that picks their length. Usually one
#   evaluation per iteration, a few when the line search must search.
#
# All three keep the pixels in 0..255: after each step the image is clipped back into the box
# (the course clips after each Adam step; scratchnst's L-BFGS handles the box in its line search).

# %%
_lesson.section("The problem: the stylisation of lesson 9, small")
# stops here, with the download command, without weights
net = _lesson.load_network(args, pooling="default", layers=_lesson.stylize_layers())
d = transfer.MODEL_DEFAULTS[net.name]
content_layer, style_layers = net.arch.resolve(d.content_layer), [(net.arch.resolve(n), w) for n, w in d.style_layers]
photo = _lesson.load(args.content, args.size)
style = _lesson.load(args.style, args.size)
x_C, x_S = image.preprocess(photo, net.preprocessing), image.preprocess(style, net.preprocessing)
cost = transfer.make_cost_function(net, x_C, [x_S], content_layer, style_layers, [1.0], d.alpha, d.beta, 0.0)
noise = rng.uniform(-transfer.COURSE_NOISE, transfer.COURSE_NOISE, photo.shape)  # the course's +-0.25 of 255
start = np.clip(photo + noise, 0, 255).astype(np.float32)
x0 = image.preprocess(start, net.preprocessing).reshape(-1).astype(np.float64)
lo = image.preprocess(np.zeros_like(photo), net.preprocessing).reshape(-1).astype(np.float64)
hi = image.preprocess(np.full_like(photo, 255), net.preprocessing).reshape(-1).astype(np.float64)
print(f"{photo.shape[0]}x{photo.shape[1]} px, {x0.size:,} unknowns; content {content_layer}, "
      f"style {', '.join(n for n, _ in style_layers)}; alpha {d.alpha:g}, beta {d.beta:g}")


def cost_and_gradient(v):
    J, dx, _ = cost(v.reshape(x_C.shape).astype(net.dtype))  # float64 optimiser, float32 network
    return J, dx.reshape(-1)


J0, g0 = cost_and_gradient(x0)
print(f"J at the start {J0:.4g}; dJ/dx: largest {np.abs(g0).max():.3g}, typical {np.median(np.abs(g0)):.3g}")

# %% [markdown]
# ## Gradient descent, in a few lines
#
# The whole algorithm is the loop below. The only choice is lr, and there is no good general
# answer: here we take the lr that moves the pixel with the largest gradient by 4 grey levels in
# the first step (lr = 4 / max|g0|), a choice that already uses knowledge of this problem's scale.
# Far from the start the gradient shrinks and so do the steps.

# %%
def gradient_descent(fun_and_grad, x0, iters, lr, bounds, callback):
    x = np.clip(x0, *bounds)
    f, g = fun_and_grad(x)
    history = [f]
    for t in range(1, iters + 1):
        x = np.clip(x - lr * g, *bounds)  # a step downhill, then back into the box
        f, g = fun_and_grad(x)
        history.append(f)
        callback(t, f, x)
    return x, history


# %% [markdown]
# ## The race
#
# Each optimiser gets the same number of iterations. We record the cost and the wall-clock time
# after each one: iterations are not all equal (an L-BFGS iteration may evaluate J several
# times), so the fair comparison is the cost against the seconds.

# %%
_lesson.section(f"{args.iters} iterations each")
runs = {}


def race(label, run):
    times, costs_seen, evals = [0.0], [J0], [1]
    begin = time.perf_counter()

    def note(iteration, f, n_evals):
        if iteration == 0:
            return  # the starting point, already recorded
        times.append(time.perf_counter() - begin)
        costs_seen.append(f)
        evals.append(n_evals)

    x = run(note)
    runs[label] = {"seconds": np.array(times), "J": np.array(costs_seen), "evals": evals,
                   "picture": image.deprocess(x.reshape(x_C.shape).astype(np.float32), net.preprocessing)}
    print(f"{label:>18}: J {J0:.4g} -> {costs_seen[-1]:.4g} in {len(costs_seen) - 1} iterations, "
          f"{evals[-1]} evaluations, {times[-1]:.1f} s")


lr_gd = 4.0 / np.abs(g0).max()
counter = {"n": 0}


def run_gd(note):
    def counted(v):
        counter["n"] += 1
        return cost_and_gradient(v)

    x, _ = gradient_descent(counted, x0, args.iters, lr_gd, (lo, hi),
                            lambda t, f, x: note(t, f, counter["n"]))
    return x


race("gradient descent", run_gd)
race(f"Adam, lr {d.lr:g}", lambda note: optim.adam(
    cost_and_gradient, x0, args.iters, lr=d.lr, bounds=(lo, hi),
    callback=lambda it: note(it.iteration, it.f, it.n_evals)).x)
race("L-BFGS", lambda note: optim.lbfgs(
    cost_and_gradient, x0, args.iters, bounds=(lo, hi),
    callback=lambda it: note(it.iteration, it.f, it.n_evals)).x)

# %% [markdown]
# (The evaluation counts include the one at the start; gradient descent and Adam evaluate once
# per step, L-BFGS once per iteration plus what its line searches need.)

# %%
_lesson.section("Pictures")
_lesson.save(args, "08_results.png", _lesson.montage(
    [start] + [r["picture"] for r in runs.values()],
    ["start"] + [f"{label}: J {r['J'][-1]:.3g}" for label, r in runs.items()], cols=4))

plt = _lesson.pyplot("the plots of the cost against iterations and seconds")
if plt is not None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for label, r in runs.items():
        left.semilogy(r["J"], label=label)
        right.semilogy(r["seconds"], r["J"], label=label)
    left.set_xlabel("iteration")
    right.set_xlabel("seconds")
    left.set_ylabel("total cost J")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    left.legend()
    fig.suptitle(f"The same stylisation, {photo.shape[0]}x{photo.shape[1]} px, {net.name}")
    _lesson.save_plot(args, "08_optimisers.png", fig)

# %% [markdown]
# ## Summary
#
# - Gradient descent needs an lr matched to the cost's scale and still crawls once the gradient
#   shrinks; Adam's per-pixel normalisation makes one lr (in grey levels) work across problems;
#   L-BFGS uses curvature and a line search and usually reaches the lowest cost for the same
#   time on this smooth, deterministic problem, which is why Gatys et al. used it.
# - Adam remains the course's choice: simple, no line search, predictable cost per step, and
#   robust when the cost is noisy (it is not, here).
# - Compare optimisers by cost against seconds, not only against iterations.
#
# ## Exercises
#
# 1. Double and halve gradient descent's lr. Where does it diverge (the cost rises), and where
#    does it become useless?
# 2. Multiply the whole cost by 100: `100 * d.alpha` and `100 * d.beta` in the line
#    `cost = transfer.make_cost_function(...)`, and keep gradient descent's lr as it was (print
#    `lr_gd` before the change and write that number in place of `4.0 / np.abs(g0).max()`). What
#    happens to each optimiser, and why? (Which steps depend on the gradient's size, and which
#    only on its direction or on ratios of gradients?)
# 3. Run Adam with the TF2 course's learning rate, 0.01 on pixels in [0, 1], i.e. 2.55 grey levels
#    on our 0..255 scale. And with lr 10?
# 4. Give L-BFGS `history_size=3` and `history_size=50` (`optim.lbfgs(..., history_size=...)`).
#    What do the curvature pairs buy?
# 5. Plot the largest pixel change per iteration for each optimiser. Which one takes large steps
#    early and small ones late?

# %%
_lesson.done()
