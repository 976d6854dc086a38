"""What the CS231n notebooks' check cells share, for tests/test_cs231n_*.py.

The notebooks print errors and say in a comment what to expect. The tests read those
statements one way throughout:
- "around 1e-9" (or "on the order of", "1e-9" alone): the same order of magnitude, so
  the error must be below 10 * 1e-9;
- "less than 1e-7", "between 1e-13 and 1e-8": below the stated bound.
Where a 2017 cell states nothing, the tests use what the later editions' copy of the same
cell says (named at each test).

Sources (repository, path, commit) of the cells and their numbers:
- 2017 edition: Burton2000/CS231n-2017 @ 0a0bd0194d9d4606dc864272823c21dba7b0e0f9,
  assignment2/{FullyConnectedNets,BatchNormalization,Dropout,ConvolutionalNetworks}.ipynb
- 2022 edition: AnirudhM1/CS231n-2022-Solutions @ 7a5b4949f5bca2715deec11d10fcd573cbd93c34,
  assignment2/{FullyConnectedNets,BatchNormalization,Dropout,ConvolutionalNetworks}.ipynb
- 2025 edition: Bert8799/cs231n-spring2025, assignment2/ConvolutionalNetworks.ipynb
  @ 9512ebfd9426e8f72cd3a5d7e3a82398b94ba81b (its layer-norm and group-norm cells are the
  2022 ones, word for word).
The check cells (inputs, seeds and hard-coded expected arrays) are the course's starter
code, the same in every copy of an edition; the copies differ only in the solutions.
"Recorded" values are a cell's printed output in those copies: the cell fixes every
input, so any correct implementation prints them (the 2017 and later copies agree).
"""

import numpy as np

from distnet.cs231n.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
)


def rel_error(x, y):
    """The notebooks' own relative error (every notebook defines it in its setup cell)."""
    return np.max(np.abs(x - y) / (np.maximum(1e-8, np.abs(x) + np.abs(y))))


def about(error, stated, what=""):
    """An error the notebook says should be 'around `stated`': the same order."""
    assert error < 10 * stated, f"{what} error {error:.3e}, the notebook expects ~{stated:.0e}"


def below(error, bound, what=""):
    """An error the notebook says should be less than `bound`."""
    assert error < bound, f"{what} error {error:.3e}, the notebook expects < {bound:.0e}"


def model_gradient_errors(model, X, y, h=1e-5):
    """The loop of the notebooks' model gradient-check cells: the initial loss and, per
    parameter, rel_error(numerical, analytic)."""
    loss, grads = model.loss(X, y)
    errors = {}
    for name in sorted(grads):
        def f(_):
            return model.loss(X, y)[0]
        grad_num = eval_numerical_gradient(f, model.params[name], verbose=False, h=h)
        errors[name] = rel_error(grad_num, grads[name])
    return loss, errors


def backward_errors(forward, backward, args, dout):
    """The notebooks' layer gradient-check cells: rel_error of each input's numerical
    gradient against backward(dout, cache), for forward(*args)."""
    _, cache = forward(*args)
    analytic = backward(dout, cache)
    errors = []
    for i, arg in enumerate(args[: len(analytic)]):
        def f(value, i=i):
            return forward(*args[:i], value, *args[i + 1:])[0]
        errors.append(rel_error(eval_numerical_gradient_array(f, arg, dout), analytic[i]))
    return errors


def norm_check_inputs(x_shape, gamma_shape):
    """The inputs every normalisation backward cell draws, in its order: seed 231, then
    x = 5 * randn + 12, gamma, beta and dout."""
    np.random.seed(231)
    x = 5 * np.random.randn(*x_shape) + 12
    gamma = np.random.randn(*gamma_shape)
    beta = np.random.randn(*gamma_shape)
    dout = np.random.randn(*x_shape)
    return x, gamma, beta, dout


def fc_check_data():
    """The data of the fully connected nets' gradient-check cells: seed 231, then 2 samples
    of 15 features and their labels for a [20, 30]-hidden net of 10 classes."""
    np.random.seed(231)
    N, D, H1, H2, C = 2, 15, 20, 30, 10
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=(N,))
    return X, y, {"input_dim": D, "num_classes": C}, [H1, H2]


def norm_backward_errors(forward, backward, x_shape, gamma_shape, *params):
    """A normalisation backward cell: norm_check_inputs, then backward_errors of
    forward(x, gamma, beta, *params)."""
    x, gamma, beta, dout = norm_check_inputs(x_shape, gamma_shape)
    return backward_errors(lambda x, g, b: forward(x, g, b, *params), backward, (x, gamma, beta),
                           dout)
