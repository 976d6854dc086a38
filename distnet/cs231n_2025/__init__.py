"""The CS231n assignment-2 module tree of the later editions (checked against the 2022
and 2025 notebooks) on top of distnet: `from cs231n.X import ...` becomes
`from distnet.cs231n_2025.X import ...`.

What differs from the 2016/2017 API of `distnet.cs231n` (see its docstring):
- `layers.dropout_forward`: `p` is the probability of KEEPING a unit (1: identity).
- `classifiers.fc_net.FullyConnectedNet(hidden_dims, ..., dropout_keep_ratio=1,
  normalization=None, ...)`: normalization None or 'batchnorm' ('layernorm' is refused:
  distnet's FullyConnectedNet has no layer-norm layers yet).
Everything else (layer and group norm with gamma (D,) or (1, C, 1, 1), conv, solver,
optim, gradient_check, data_utils) is the same module as in `distnet.cs231n`.
"""
