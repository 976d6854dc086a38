"""The benchmark harness's own logic (no timing is asserted): the configs describe the
networks distnet builds, the run plan interleaves every system, the statistics read the
step times they are given, the results file only grows, and the README keeps its
hand-written text."""

import numpy as np
import pytest

from benchmarks.harness import report, results
from benchmarks.harness.configs import CONFIGS, TINY
from benchmarks.harness.measure import Measurement, summarize
from benchmarks.throughput import parse_args, plan
from distnet.config import JobConfig
from distnet.models import build_model


@pytest.mark.parametrize("config", [*CONFIGS.values(), TINY], ids=lambda c: c.name)
def test_config_sizes_match_distnet_models(config, tmp_path):
    job = JobConfig.from_dict(
        config.job_dict(workers=2, data=str(tmp_path), tmp=str(tmp_path), max_steps=10)
    )
    model = build_model(job.model, seed=0)
    assert model.params.vector.size == config.param_count()
    assert model.get_bn_state().size == config.bn_count()
    assert model.params.vector.dtype == np.float32
    assert report.bytes_per_step(config, 2) == 4 * 2 * 2 * (
        config.param_count() + config.bn_count()
    )


def test_plan_visits_every_system_once_per_repeat_in_rotating_order():
    args = parse_args(["--repeats", "3", "--configs", "two_layer", "large"])
    order = plan(args)
    firsts = []
    for repeat in range(3):
        for name in ("two_layer", "large"):
            systems = [s for r, c, s in order if r == repeat and c == name]
            assert sorted(systems) == sorted(args.systems)
            firsts.append(systems[0])
        tiny = [s for r, c, s in order if r == repeat and c == TINY.name]
        assert sorted(tiny) == ["ddp", "distnet1", "distnet2"]
    assert len(set(firsts)) > 1  # not always the same system first


def test_statistics_discard_warmup_and_take_medians():
    steps = [1.0] * 5 + [
        0.1,
        0.2,
        0.3,
        0.2,
        0.1,
        0.2,
        0.2,
        0.2,
        0.2,
        0.2,
        0.4,
        0.2,
        0.2,
        0.2,
        0.2,
        0.2,
        0.2,
        0.2,
        0.2,
        0.2,
    ]
    m = Measurement("numpy", "two_layer", 100, 0, steps, load_avg=1.0, idle_before=0.5)
    assert max(m.timed) < 1.0  # the slow first steps are warm-up
    assert m.median_step_s == pytest.approx(0.2)
    assert m.samples_per_s == pytest.approx(500)
    other = Measurement("numpy", "two_layer", 100, 1, [x * 2 for x in steps], 1.0, 0.5)
    failed = Measurement("numpy", "two_layer", 100, 2, [], 1.0, 0.5, error="boom")
    s = summarize([m, other, failed])["two_layer", "numpy"]
    assert s.repeats == 2 and s.errors == ["boom"]
    assert s.samples_per_s == pytest.approx(375)  # median of 500 and 250
    assert s.spread == pytest.approx(250 / 375)


def test_write_readme_replaces_only_the_results(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"# Title\nintro\n{report.START}\nold\n{report.END}\nafterword\n")
    report.write_readme(path, "new table\n")
    assert (
        path.read_text() == f"# Title\nintro\n{report.START}\nnew table\n{report.END}\nafterword\n"
    )


def test_write_readme_adds_a_new_section_at_the_end_and_then_replaces_it(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"# Title\n{report.START}\nfc\n{report.END}\nafterword\n")
    report.write_readme(path, "conv 1\n", "conv-results")
    start, end = report.markers("conv-results")
    assert path.read_text() == (
        f"# Title\n{report.START}\nfc\n{report.END}\nafterword\n\n{start}\nconv 1\n{end}\n"
    )
    report.write_readme(path, "conv 2\n", "conv-results")
    assert path.read_text().endswith(f"{start}\nconv 2\n{end}\n")
    assert f"{report.START}\nfc\n{report.END}" in path.read_text()


def test_results_file_appends_runs_and_reads_back_measurements(tmp_path):
    path = tmp_path / "results.jsonl"
    first = [
        Measurement(
            "numpy",
            "two_layer",
            100,
            r,
            [0.5, 0.25, 0.125],
            1.0,
            0.5,
            {"split_ms": {"step_s": 2.0}},
        )
        for r in range(2)
    ]
    second = [Measurement("ddp", "large", 512, 0, [], 3.0, 0.1, error="boom")]
    results.append_run(
        path, {"date": "2026-01-01 10:00", "label": "a"}, [m.to_json() for m in first]
    )
    before = path.read_text()
    results.append_run(
        path, {"date": "2026-01-01 10:00", "label": "b"}, [m.to_json() for m in second]
    )
    assert path.read_text().startswith(before)  # earlier runs are not rewritten
    assert len(path.read_text().splitlines()) == 5  # a header and one line per measurement
    runs = results.read_runs(path)
    assert [run["label"] for run, _ in runs] == ["a", "b"]
    assert [Measurement(**r) for r in runs[0][1]] == first
    assert [Measurement(**r) for r in runs[1][1]] == second


def test_results_file_refuses_a_measurement_without_its_run(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"record": "measurement", "run": "2026-01-01 10:00"}\n')
    with pytest.raises(ValueError, match=r"results.jsonl:1: not a run header"):
        results.read_runs(path)
