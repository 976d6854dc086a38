"""cs231n/classifiers/fc_net.py (2016/2017): TwoLayerNet and FullyConnectedNet, with
`dropout` the probability of dropping a unit (0: none) and `use_batchnorm`.

The assignment's fc_net.py star-imports its layers, so notebooks take relu_forward,
svm_loss, batchnorm_forward, ... from `from cs231n.classifiers.fc_net import *`; so do
these.
"""

from distnet.cs231n.layer_utils import *
from distnet.cs231n.layers import *
from distnet.models import FullyConnectedNet, TwoLayerNet  # noqa: F401
