"""cs231n/layers.py of the later editions: distnet.layers, with dropout's `p` the
probability of keeping a unit."""

from distnet.cs231n.layers import *
from distnet.errors import InvalidInput
from distnet.layers import dropout_forward as _dropout_forward_drop_p


def dropout_forward(x, dropout_param):
    """Inverted dropout keeping each unit with probability dropout_param['p'] (0 < p <= 1),
    scaling survivors by 1 / p; otherwise as distnet.layers.dropout_forward ('mode',
    optional 'seed'). dropout_backward is distnet's (the cache is the same)."""
    keep = float(dropout_param["p"])
    if not 0 < keep <= 1:
        raise InvalidInput(f"dropout keep probability p must be in (0, 1], got {keep}")
    return _dropout_forward_drop_p(x, {**dropout_param, "p": 1 - keep})
