"""The catalogue of the exercises: which functions are graded, in which order, for how many points.

Each Exercise names a function of the package that holds a solution region and the function that
makes its checks (exercise_checks_layers, _costs, _optim). `scratchnst exercises check` grades
the marked functions listed here; the README of the student copy lists them in this order.
"""

from dataclasses import dataclass
from typing import Callable

import scratchnst.exercises.checks_costs as cost_checks
import scratchnst.exercises.checks_layers as layer_checks
import scratchnst.exercises.checks_optim as optim_checks


@dataclass(frozen=True)
class Exercise:
    """One function to write, how many points it is worth, and how it is checked."""

    module: str
    function: str
    points: int
    cases: Callable  # (ref, rng, use_torch) -> list of Case; ref from `exercises._reference()`
    uses: tuple = ()  # other exercises it usually calls: named when it fails

    @property
    def name(self):
        return f"{self.module}.{self.function}"


# In the order a student should do them: the README lists them so.
CATALOGUE = (
    Exercise("layers", "relu_forward", 1, layer_checks.relu_forward_cases),
    Exercise("layers", "relu_backward", 1, layer_checks.relu_backward_cases),
    Exercise("layers", "conv2d_forward", 3, layer_checks.conv2d_forward_cases),
    Exercise("layers", "conv2d_backward", 3, layer_checks.conv2d_backward_cases),
    Exercise("layers", "max_pool_forward", 2, layer_checks.max_pool_forward_cases),
    Exercise("layers", "max_pool_backward", 2, layer_checks.max_pool_backward_cases),
    Exercise("layers", "avg_pool_forward", 2, layer_checks.avg_pool_forward_cases),
    Exercise("layers", "avg_pool_backward", 2, layer_checks.avg_pool_backward_cases),
    Exercise("costs", "compute_content_cost", 2, cost_checks.content_cost_cases),
    Exercise("costs", "content_cost_backward", 2, cost_checks.content_cost_backward_cases),
    Exercise("costs", "gram_matrix", 1, cost_checks.gram_matrix_cases),
    Exercise("costs", "gram_matrix_backward", 1, cost_checks.gram_matrix_backward_cases),
    Exercise("costs", "compute_layer_style_cost", 3, cost_checks.layer_style_cost_cases,
             uses=("gram_matrix",)),
    Exercise("costs", "layer_style_cost_backward", 3, cost_checks.layer_style_cost_backward_cases,
             uses=("gram_matrix",)),
    Exercise("costs", "style_target", 1, cost_checks.style_target_cases, uses=("gram_matrix",)),
    Exercise("costs", "layer_style_cost_from_target", 2, cost_checks.layer_style_cost_from_target_cases,
             uses=("gram_matrix",)),
    Exercise("costs", "total_cost", 1, cost_checks.total_cost_cases),
    Exercise("costs", "compute_total_variation_cost", 1, cost_checks.total_variation_cost_cases),
    Exercise("costs", "total_variation_cost_backward", 2, cost_checks.total_variation_cost_backward_cases),
    Exercise("optim", "adam_update", 2, optim_checks.adam_update_cases),
)

