"""The network a job's [model] table describes (distnet.config.ModelConfig), of any family.

    model = build_model(load_job("jobs/three_layer_convnet.toml").model, seed=0)

The config imports CONV_KINDS and CIFAR_IMAGE from here to check conv jobs, so this module
does not import the config back (not even for type hints: no import cycle).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from distnet.errors import InvalidInput
from distnet.models.conv import ConvNet, ThreeLayerConvNet
from distnet.models.fc import FullyConnectedNet, TwoLayerNet

CIFAR_IMAGE = (3, 32, 32)
CONV_KINDS = ("three_layer_conv", "conv")


def build_model(
    model_cfg,
    input_dim: int | Sequence[int] = CIFAR_IMAGE,
    num_classes: int = 10,
    dtype: str | None = None,
    seed: int | None = None,
):
    """The network `model_cfg` (a ModelConfig) describes, its initial weights drawn from
    `seed` (None: NumPy's global generator); `dtype` overrides model.dtype (float64 for
    gradient checks).

    input_dim: one sample's shape (C, H, W); a fully connected net also takes its size.
    """
    common = {
        "num_classes": num_classes,
        "reg": model_cfg.reg,
        "dtype": np.dtype(dtype or model_cfg.dtype),
        "init_seed": seed,
    }
    if model_cfg.kind in CONV_KINDS:
        if isinstance(input_dim, (int, np.integer)):
            raise InvalidInput(
                f'kind = "{model_cfg.kind}" takes images: input_dim must be '
                f"(C, H, W), got {input_dim!r}"
            )
        # weight_init "he": ConvNet's He initialisation (weight_scale None).
        scale = None if model_cfg.weight_init == "he" else model_cfg.weight_scale
        if model_cfg.kind == "three_layer_conv":
            return ThreeLayerConvNet(
                input_dim,
                num_filters=model_cfg.num_filters,
                filter_size=model_cfg.filter_size,
                hidden_dim=model_cfg.hidden_dims[0],
                weight_scale=scale,
                **common,
            )
        return ConvNet(model_cfg.blocks, input_dim=input_dim, weight_scale=scale, **common)
    common |= {
        "input_dim": input_dim
        if isinstance(input_dim, (int, np.integer))
        else math.prod(input_dim),
        "weight_scale": model_cfg.weight_scale,
    }
    if model_cfg.kind == "two_layer":
        return TwoLayerNet(hidden_dim=model_cfg.hidden_dims[0], **common)
    return FullyConnectedNet(
        list(model_cfg.hidden_dims),
        dropout=model_cfg.dropout,
        use_batchnorm=model_cfg.use_batchnorm,
        **common,
    )
