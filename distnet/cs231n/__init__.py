"""The CS231n assignment-2 module tree (2016/2017 editions) on top of distnet.

Code written for the assignment runs unchanged once its `cs231n.` imports name
`distnet.cs231n.` instead:

    from distnet.cs231n.classifiers.fc_net import *  # was: from cs231n.classifiers.fc_net ...
    from distnet.cs231n.gradient_check import eval_numerical_gradient_array
    from distnet.cs231n.solver import Solver

Every module here is a thin re-export of distnet (layers, fast_layers, layer_utils,
classifiers.fc_net, classifiers.cnn, solver, optim, gradient_check) or small and new
(data_utils over distnet's dataset, vis_utils.visualize_grid). As in the assignment,
`classifiers.fc_net` and `classifiers.cnn` also hand out every layer to a star import.

Editions: the one switch is the package you import from.
- `distnet.cs231n` (this package): the 2016/2017 API, the one distnet itself follows.
  Dropout's `p` is the probability of DROPPING a unit; `FullyConnectedNet(...,
  dropout=0, use_batchnorm=False, ...)`.
- `distnet.cs231n_2025`: the later editions' API (checked against the 2022 and 2025
  notebooks). Dropout's `p` is the probability of KEEPING a unit;
  `FullyConnectedNet(..., dropout_keep_ratio=1, normalization=None | 'batchnorm', ...)`.
  Its other modules are this package's.
"""
