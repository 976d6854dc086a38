"""cs231n/optim.py: distnet's update rules, `next_w, config = rule(w, dw, config)`."""

from distnet.optim import adam, rmsprop, sgd, sgd_momentum  # noqa: F401
