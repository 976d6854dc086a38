"""cs231n/classifiers/fc_net.py of the later editions: FullyConnectedNet with
dropout_keep_ratio and normalization; a star import also gives every layer."""

import numpy as np

from distnet import models
from distnet.cs231n.layer_utils import *
from distnet.cs231n_2025.layers import *
from distnet.errors import InvalidInput
from distnet.models import TwoLayerNet  # noqa: F401


class FullyConnectedNet(models.FullyConnectedNet):
    """distnet's FullyConnectedNet under the later signature: dropout_keep_ratio is the
    probability of keeping a hidden unit (1: no dropout); normalization None or
    'batchnorm'."""

    def __init__(
        self,
        hidden_dims,
        input_dim=3 * 32 * 32,
        num_classes=10,
        dropout_keep_ratio=1,
        normalization=None,
        reg=0.0,
        weight_scale=1e-2,
        dtype=np.float32,
        seed=None,
    ):
        if normalization not in (None, "batchnorm"):
            raise InvalidInput(
                f"normalization must be None or 'batchnorm', got {normalization!r}"
                + (
                    " (distnet's FullyConnectedNet has no layer norm yet)"
                    if normalization == "layernorm"
                    else ""
                )
            )
        if not 0 < dropout_keep_ratio <= 1:
            raise InvalidInput(f"dropout_keep_ratio must be in (0, 1], got {dropout_keep_ratio!r}")
        super().__init__(
            hidden_dims,
            input_dim=input_dim,
            num_classes=num_classes,
            dropout=1 - dropout_keep_ratio,
            use_batchnorm=normalization == "batchnorm",
            reg=reg,
            weight_scale=weight_scale,
            dtype=dtype,
            seed=seed,
        )
        self.normalization = normalization
