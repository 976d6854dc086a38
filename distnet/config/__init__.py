"""Job files: TOML -> typed, validated configuration.

A job file has the top-level keys `name` and `seed` and the tables [data], [model],
[optim], [train], [checkpoint] and [metrics]. Every key is optional and defaults to the
value in the dataclass below; an unknown key, a value of the wrong type (`true` is not an
integer; an integer is fine where a number is expected) or an impossible value raises
ConfigError naming the key as `section.key` and the file:

    job = load_job("jobs/two_layer.toml", ["train.workers=4"])
    model = distnet.models.build_model(job.model)  # the network it describes

`{name}` in `checkpoint.dir` and `metrics.logdir` is replaced by the job's name.
"""

from distnet.config.job import DEFAULT_JOB, SECTIONS, JobConfig, apply_overrides, load_job
from distnet.config.schema import ConfigError
from distnet.config.sections import (
    RULE_SETTINGS,
    CheckpointConfig,
    DataConfig,
    MetricsConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    UpdateRule,
)

__all__ = [
    "DEFAULT_JOB",
    "RULE_SETTINGS",
    "SECTIONS",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "JobConfig",
    "MetricsConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "UpdateRule",
    "apply_overrides",
    "load_job",
]
