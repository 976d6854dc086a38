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
  @ 9512ebfd9426e8f72cd3a5d7e3a82398b94ba81b (its spatial batch- and group-norm cells are
  the 2022 ones, word for word, and its copy records the group-norm outputs the tests use)
  and assignment2/BatchNormalization.ipynb @ 68daa0045685fbf458cd21300b4198607795663c
  (its batchnorm cells are the 2022 ones; its layer-norm cells were not compared).
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
            return forward(*args[:i], value, *args[i + 1 :])[0]

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
    return backward_errors(
        lambda x, g, b: forward(x, g, b, *params), backward, (x, gamma, beta), dout
    )


def check_batchnorm_net(make_model):
    """The BatchNormalization notebook's gradient check of a batchnorm net (reg 0 and 3.14)
    on fc_check_data; make_model(hidden_dims, sizes, reg) spells the edition's flag."""
    X, y, sizes, hidden_dims = fc_check_data()
    # Recorded: 2.26119551013 and 6.99653322011 in 2017, these in 2022.
    recorded_losses = {0: 2.2611955101340957, 3.14: 6.996533220108303}
    for reg in [0, 3.14]:
        loss, errors = model_gradient_errors(make_model(hidden_dims, sizes, reg), X, y)
        assert abs(loss - recorded_losses[reg]) < 1e-10 * recorded_losses[reg]
        # The 2017 cell states nothing; the 2022 one: "losses between 1e-4~1e-10 for W,
        # between 1e-08~1e-10 for b, and between 1e-08~1e-09 for beta and gammas" (both
        # record W1 1.10e-04 at reg 0: the bounds are orders of magnitude). b1 and b2 feed
        # batchnorm, so their true gradient is 0 and rel_error divides rounding noise by its
        # 1e-8 floor: the 2022 copy records b2 1.93e-07, beyond its own bound; 1e-6 is taken
        # for them (distnet reads 3e-7 and 8e-7).
        for name, error in errors.items():
            if name in ("b1", "b2"):
                below(error, 1e-6, name)
            else:
                about(error, 1e-4 if name.startswith("W") else 1e-8, name)


def check_dropout_net(make_model, strengths):
    """The Dropout notebook's gradient check on fc_check_data, for make_model(hidden_dims,
    sizes, strength) and the edition's three strengths, the first one meaning no dropout."""
    X, y, sizes, hidden_dims = fc_check_data()
    for strength in strengths:
        loss, errors = model_gradient_errors(make_model(hidden_dims, sizes, strength), X, y)
        if strength == strengths[0]:
            assert abs(loss - 2.300479089768492) < 1e-10  # recorded (2017: 2.30047908977)
        # The 2017 cell states nothing; the 2022 one: "Relative errors should be around e-6
        # or less. Note that it's fine if for dropout_keep_ratio=1 you have W2 error be on
        # the order of e-5."
        for name, error in errors.items():
            about(error, 1e-5 if (strength, name) == (strengths[0], "W2") else 1e-6, name)


def check_dropout_forward(dropout_forward, ps, dropped):
    """The Dropout notebook's forward cell: seed 231, x = randn(500, 500) + 10, a train and
    a test pass for each p; dropped(p) is the fraction the edition's p drops. The cell
    prints these for the eye; they are held to 0.01 of the fraction and 2% of the mean."""
    np.random.seed(231)
    x = np.random.randn(500, 500) + 10
    for p in ps:
        out, _ = dropout_forward(x, {"mode": "train", "p": p})
        out_test, _ = dropout_forward(x, {"mode": "test", "p": p})
        assert abs((out == 0).mean() - dropped(p)) < 0.01
        assert abs(out.mean() - x.mean()) < 0.02 * x.mean()
        assert (out_test == 0).mean() == 0
        assert out_test.mean() == x.mean()


def two_layer_activations(N):
    """The normalisation forward cells' input: seed 231, then N samples through a random
    50 - 60 (relu) - 3 network."""
    np.random.seed(231)
    D1, D2, D3 = 50, 60, 3
    X = np.random.randn(N, D1)
    W1 = np.random.randn(D1, D2)
    W2 = np.random.randn(D2, D3)
    return np.maximum(0, X.dot(W1)).dot(W2)


def dropout_backward_error(dropout_forward, dropout_backward, p):
    """The Dropout notebook's backward cell: rel_error of dx on a seeded 10 x 10 input with
    dropout_param {'mode': 'train', 'p': p, 'seed': 123}; also returns dx."""
    np.random.seed(231)
    x = np.random.randn(10, 10) + 10
    dout = np.random.randn(*x.shape)
    dropout_param = {"mode": "train", "p": p, "seed": 123}
    _, cache = dropout_forward(x, dropout_param)
    dx = dropout_backward(dout, cache)
    dx_num = eval_numerical_gradient_array(
        lambda xx: dropout_forward(xx, dropout_param)[0], x, dout
    )
    return rel_error(dx, dx_num), dx
