"""The restricted unpickler builds numpy arrays from CIFAR pickles and refuses everything else."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from datagen import (
    FOLDER,
    batch_pickle,
    cifar_members,
    fake_cifar,
    md5_of,
    py2_pickle,
    write_tarball,
)

from distnet.data.errors import DataError
from distnet.data.prepare import prepare_dataset
from distnet.data.unpickle import ForbiddenGlobalError, restricted_loads


class RunsCommand:
    """Unpickling this calls os.system(command): what a malicious batch file would do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_cifar_batch_pickled_like_python2_loads(tmp_path):
    images = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    batch = restricted_loads(batch_pickle(images, [3, 7]), "batch")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    np.testing.assert_array_equal(batch[b"data"], images)
    assert batch[b"labels"] == [3, 7]


def test_numpy_1_global_names_of_the_official_file_load():
    """The official pickles name numpy.core.multiarray, numpy 2 writes numpy._core."""
    data = py2_pickle({b"data": np.arange(6, dtype=np.uint8), b"x": np.int64(5)})
    assert b"numpy._core.multiarray\n_reconstruct" in data
    old = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    loaded = restricted_loads(old, "old")
    np.testing.assert_array_equal(loaded[b"data"], np.arange(6, dtype=np.uint8))
    assert loaded[b"x"] == 5


def evil_payload(sentinel, protocol=2) -> bytes:
    return pickle.dumps({"data": RunsCommand(f"touch {sentinel}"), "labels": []}, protocol)


def test_the_malicious_payload_does_run_under_plain_pickle(tmp_path):
    """Control: the payload used below really executes when unpickled unrestricted."""
    sentinel = tmp_path / "pwned"
    pickle.loads(evil_payload(sentinel))
    assert sentinel.exists()


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, protocol):
    sentinel = tmp_path / "pwned"
    with pytest.raises(ForbiddenGlobalError, match=r"forbidden global (posix|os)\.system"):
        restricted_loads(evil_payload(sentinel, protocol), "evil")
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "module, name",
    [
        ("builtins", "eval"),
        ("subprocess", "Popen"),
        ("numpy", "load"),
        ("numpy.lib.npyio", "load"),
        ("numpy.testing", "assert_"),
        ("pickle", "loads"),
    ],
)
def test_other_globals_are_refused(module, name):
    payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
    with pytest.raises(ForbiddenGlobalError, match=f"{module}.{name}"):
        restricted_loads(payload, "evil")


@pytest.mark.parametrize("payload", [b"", b"\x80\x02}q\x00", b"garbage", b"\x80\x02Q."])
def test_malformed_pickles_are_data_errors(payload):
    with pytest.raises(DataError, match="bad: "):
        restricted_loads(payload, "bad")


def test_tarball_with_a_malicious_batch_is_refused_without_side_effect(tmp_path):
    sentinel = tmp_path / "pwned"
    members = cifar_members(fake_cifar(10, 10))
    members[f"{FOLDER}/data_batch_2"] = evil_payload(sentinel)
    tarball = write_tarball(tmp_path / "evil.tar.gz", members)
    with pytest.raises(ForbiddenGlobalError, match="data_batch_2: pickle asks for forbidden"):
        prepare_dataset(
            str(tmp_path / "out"),
            source=str(tarball),
            md5=md5_of(tarball),
            shards=2,
            num_val=5,
            progress=False,
        )
    assert not sentinel.exists()
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_no_other_code_unpickles():
    """distnet and its benchmarks read pickles only through restricted_loads: no other
    pickle.load/loads/Unpickler, and no np.load with allow_pickle=True."""
    import ast

    root = Path(__file__).resolve().parent.parent
    found = []
    for path in [*(root / "distnet").rglob("*.py"), *(root / "benchmarks").rglob("*.py")]:
        if path == root / "distnet" / "data" / "unpickle.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("load", "loads", "Unpickler")
                and isinstance(node.value, ast.Name)
                and "pickle" in node.value.id
            ):
                found.append(f"{path.relative_to(root)}:{node.lineno} pickle.{node.attr}")
            if (
                isinstance(node, ast.keyword)
                and node.arg == "allow_pickle"
                and not (isinstance(node.value, ast.Constant) and node.value.value is False)
            ):
                found.append(f"{path.relative_to(root)}:{node.value.lineno} allow_pickle")
    assert not found, found
