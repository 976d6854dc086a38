"""cs231n/gradient_check.py: numerical gradients by centered differences (distnet.gradcheck)."""

from distnet.gradcheck import (  # noqa: F401
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    grad_check_sparse,
    rel_error,
)
