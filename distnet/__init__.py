"""distnet: data-parallel training of numpy neural networks on Ray.

The network library (layers, models, optim, solver, gradcheck) is plain numpy and never
imports ray; `distnet.train` and `distnet.load_model` (a checkpoint's model, see
distnet.inference) are loaded lazily so that `import distnet.layers` stays light.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: the distributed trainer pulls in ray, the model code must not.
    if name == "train":
        from distnet.distributed.driver import train

        return train
    if name == "load_model":
        from distnet.inference import load_model

        return load_model
    raise AttributeError(f"module 'distnet' has no attribute {name!r}")
