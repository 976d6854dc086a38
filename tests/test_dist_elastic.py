"""Elastic training (docs/elastic.md): block assignment, config validation, an elastic run
on the session Ray equal to the fixed run, and on a real multi-node cluster workers that
join and leave mid-run with the result unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from distnet.config import ConfigError, JobConfig
from distnet.distributed.driver import train
from distnet.distributed.elastic import assign_blocks

BASE = {
    "model": {"dtype": "float64", "use_batchnorm": True, "dropout": 0.1},
    "data": {"augment_flip": True},
    "optim": {"update_rule": "adam", "learning_rate": 1e-3},
}


@pytest.mark.parametrize("blocks,workers", [(1, 1), (3, 1), (3, 2), (3, 3), (8, 3), (5, 4)])
def test_each_block_goes_to_exactly_one_worker_in_order(blocks, workers):
    shares = assign_blocks(blocks, workers)
    assert len(shares) == workers and all(shares)
    assert [b for share in shares for b in share] == list(range(blocks))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("blocks,workers", [(3, 0), (3, 4)])
def test_more_workers_than_blocks_is_refused(blocks, workers):
    with pytest.raises(ValueError):
        assign_blocks(blocks, workers)


def job(**train):
    return JobConfig.from_dict({"train": train})


def test_elastic_config_cuts_each_step_into_max_workers_blocks():
    t = job(max_workers=4).train
    assert (t.elastic, t.min_workers, t.max_workers, t.workers) == (True, 1, 4, 4)
    assert job(min_workers=2, max_workers=3, workers=3).train.min_workers == 2
    assert not job(workers=3).train.elastic
    again = JobConfig.from_dict(JobConfig.from_dict({"train": {"max_workers": 3}}).to_dict())
    assert again.train.workers == 3


@pytest.mark.parametrize(
    "train,message",
    [
        ({"min_workers": 1}, "train.min_workers = 1 applies only with train.max_workers set"),
        ({"max_workers": 0}, "train.max_workers must be >= 1"),
        ({"min_workers": 3, "max_workers": 2}, "train.min_workers must be in 1..train.max_workers"),
        ({"min_workers": 0, "max_workers": 2}, "train.min_workers must be in 1..train.max_workers"),
        ({"max_workers": 4, "workers": 3}, "train.workers = 3 conflicts with train.max_workers"),
        ({"max_workers": 2, "mode": "async"}, 'needs mode = "sync"'),
        ({"max_workers": 2, "backup_workers": 1}, "needs no backup workers"),
        ({"max_workers": 2, "compression": "topk"}, 'needs compression "none" or "fp16"'),
        ({"max_workers": 2, "elastic_wait_s": 0}, "train.elastic_wait_s must be > 0"),
        ({"elastic_wait_s": 5}, "applies only with train.max_workers set"),
        ({"max_workers": 200}, "train.batch_size must be at least train.workers (200)"),
    ],
)
def test_bad_elastic_settings_are_one_line_errors(train, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        job(**train)


def test_an_elastic_run_equals_the_fixed_run_of_max_workers(ray_session, tiny_job):
    fixed = train(tiny_job(**BASE, train={"workers": 3}), progress=False, overwrite=True)
    elastic = train(
        tiny_job(**BASE, train={"max_workers": 3, "min_workers": 1}), progress=False, overwrite=True
    )
    assert elastic.steps == fixed.steps > 5
    assert elastic.transport == "tasks"
    np.testing.assert_array_equal(elastic.final_params, fixed.final_params)
    np.testing.assert_array_equal(elastic.bn_state, fixed.bn_state)
    assert elastic.loss_history == fixed.loss_history
    assert elastic.val_acc_history == fixed.val_acc_history
