"""Using what was trained: distnet.load_model, `distnet eval` and `distnet predict`.

One real run (2 workers on the session's local Ray, batchnorm, 3 epochs on the tiny
dataset) writes the checkpoint every test reads; the commands run in-process through
distnet.cli.main(argv), and their numbers are checked against numpy on the loaded model.
"""

import json

import numpy as np
import pytest
from PIL import Image

import distnet
from distnet.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from distnet.cli import main
from distnet.config import JobConfig
from distnet.data.reader import load_manifest, open_split

EPOCHS = 3


@pytest.fixture(scope="module")
def run(ray_session, tiny_dataset, tmp_path_factory):
    """(checkpoint directory, the dataset) of a finished run."""
    root = tmp_path_factory.mktemp("trained")
    job = JobConfig.from_dict(
        {
            "name": "trained",
            "seed": 5,
            "data": {"path": tiny_dataset},
            "model": {
                "kind": "fc",
                "hidden_dims": [16],
                "use_batchnorm": True,
                "weight_scale": 1e-2,
            },
            "optim": {"update_rule": "adam", "learning_rate": 3e-3},
            "train": {
                "num_epochs": EPOCHS,
                "batch_size": 40,
                "workers": 2,
                "num_train_samples": 100,
            },
            "checkpoint": {"dir": str(root / "ckpt")},
            "metrics": {"logdir": str(root / "runs")},
        }
    )
    distnet.train(job, progress=False)
    return root / "ckpt", tiny_dataset


def cli(capsys, *argv):
    """(exit status, stdout, stderr) of `distnet ARGV...` run in this process."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def softmax(scores):
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- load_model ---------------------------------------------------------------------


def test_load_model_holds_the_best_parameters_and_their_batchnorm_statistics(run):
    directory, _ = run
    path = latest_checkpoint(directory)
    state = load_checkpoint(path)
    assert state.epoch == EPOCHS and state.best_params is not None
    assert state.bn_state.size and state.best_bn_state is not None
    for where in (path, directory, str(directory)):  # a file, or a directory's newest
        model = distnet.load_model(where)
        np.testing.assert_array_equal(model.params.vector, state.best_params)
        np.testing.assert_array_equal(model.get_bn_state(), state.best_bn_state)
        assert model.use_batchnorm and model.params.vector.dtype == np.float32


def test_load_model_takes_the_best_not_the_last(run, tmp_path):
    state = load_checkpoint(latest_checkpoint(run[0]))
    # The last parameters and statistics moved on after the best epoch.
    state.params = state.best_params + 1
    state.bn_state = state.best_bn_state * 2
    model = distnet.load_model(save_checkpoint(tmp_path / "moved", state, keep=1))
    np.testing.assert_array_equal(model.params.vector, state.best_params)
    np.testing.assert_array_equal(model.get_bn_state(), state.best_bn_state)
    # Before any epoch ended there is no best yet: the last ones are all there is.
    state.best_params, state.best_bn_state, state.best_val_acc = None, None, -1.0
    model = distnet.load_model(save_checkpoint(tmp_path / "early", state, keep=1))
    np.testing.assert_array_equal(model.params.vector, state.params)
    np.testing.assert_array_equal(model.get_bn_state(), state.bn_state)


def test_a_model_outlives_run_settings_this_version_dropped(run, tmp_path):
    state = load_checkpoint(latest_checkpoint(run[0]))
    state.config["train"]["retired_knob"] = 1.5  # written by a distnet that had it
    model = distnet.load_model(save_checkpoint(tmp_path / "old", state, keep=1))
    np.testing.assert_array_equal(model.params.vector, state.best_params)
    # A network this version cannot build is still an error naming the key.
    state.config["model"]["retired_layer"] = True
    with pytest.raises(CheckpointError, match=r"unknown key model\.retired_layer"):
        distnet.load_model(save_checkpoint(tmp_path / "odd", state, keep=1))


# --- distnet eval --------------------------------------------------------------------


def expected_scores(run, split):
    """Accuracy, per-class accuracy and confusion[true, predicted] computed here."""
    directory, dataset = run
    reader = open_split(dataset, split)
    X, y = reader.batch(np.arange(reader.num_rows))
    predicted = distnet.load_model(directory).loss(X).argmax(axis=1)
    confusion = np.zeros((10, 10), np.int64)
    for true, guess in zip(y, predicted, strict=True):
        confusion[true, guess] += 1
    per_class = [
        float(np.mean(predicted[y == c] == c)) if (y == c).any() else None for c in range(10)
    ]
    return float(np.mean(predicted == y)), per_class, confusion, len(y)


@pytest.mark.parametrize("split", ["test", "val", "train"])
def test_eval_json_matches_numpy_on_the_model(run, split, capsys):
    accuracy, per_class, confusion, count = expected_scores(run, split)
    status, out, err = cli(capsys, "eval", run[0], "--split", split, "--json")
    assert (status, err) == (0, "")
    got = json.loads(out)
    names = load_manifest(run[1]).label_names
    assert got["split"] == split and got["count"] == count and got["label_names"] == names
    assert got["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert [got["per_class"][name] for name in names] == pytest.approx(per_class, abs=1e-12)
    np.testing.assert_array_equal(got["confusion"], confusion)


def test_eval_prints_accuracy_per_class_and_the_confusion_matrix(run, capsys):
    accuracy, per_class, confusion, count = expected_scores(run, "test")
    status, out, _ = cli(capsys, "eval", run[0])  # --split test is the default
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == f"test: accuracy {accuracy:.4f} ({np.trace(confusion)} of {count} images)"
    names = load_manifest(run[1]).label_names
    table = {line.split()[0]: line.split()[1:] for line in lines[3 : 3 + len(names)]}
    for name, acc, row in zip(names, per_class, confusion, strict=True):
        shown = "-" if acc is None else f"{acc:.4f}"
        assert table[name] == [shown, str(row.sum())], name
    start = lines.index("confusion (rows: true class, columns: predicted)") + 2
    matrix = [[int(v) for v in line.split()[1:]] for line in lines[start : start + len(names)]]
    np.testing.assert_array_equal(matrix, confusion)
    assert [line.split()[0] for line in lines[start : start + len(names)]] == names


# --- distnet predict -----------------------------------------------------------------


def picture(row):
    """A dataset row (the R, G, B planes) as a (32, 32, 3) picture."""
    return row.reshape(3, 32, 32).transpose(1, 2, 0)


def expected_probabilities(run, pixels):
    """softmax of the model's scores on uint8 rows, normalized with the training mean."""
    mean = load_manifest(run[1]).mean_array()
    X = (pixels.reshape(len(pixels), -1) - mean).astype(np.float32)
    return softmax(distnet.load_model(run[0]).loss(X).astype(np.float64))


@pytest.fixture
def test_images(run):
    reader = open_split(run[1], "test")
    images, _ = reader.take(np.arange(4))
    return images  # uint8 (4, 3072)


def predictions(out):
    """{file: probabilities in label order} from `predict --json` output."""
    rows = [json.loads(line) for line in out.splitlines()]
    for row in rows:
        probs = row["probabilities"]
        assert row["label"] == max(probs, key=probs.get)
    return {row["file"]: np.array(list(row["probabilities"].values())) for row in rows}


def test_predict_labels_png_and_jpeg_files(run, test_images, tmp_path, capsys):
    png, jpeg, wide = tmp_path / "a.png", tmp_path / "b.JPG", tmp_path / "wide.png"
    Image.fromarray(picture(test_images[0])).save(png)
    Image.fromarray(picture(test_images[1])).save(jpeg, quality=90)
    # 40 wide, 32 high: center-cropped to the 32x32 picture in the middle, no resize.
    border = np.full((32, 4, 3), 255, np.uint8)
    Image.fromarray(np.hstack([border, picture(test_images[2]), border])).save(wide)

    status, out, err = cli(capsys, "predict", run[0], png, jpeg, wide, "--json")
    assert (status, err) == (0, "")
    got = predictions(out)
    assert list(got) == [str(png), str(jpeg), str(wide)]
    decoded_jpeg = np.asarray(Image.open(jpeg).convert("RGB")).transpose(2, 0, 1)  # lossy
    expected = expected_probabilities(
        run, np.stack([test_images[0], decoded_jpeg.reshape(-1), test_images[2]])
    )
    np.testing.assert_allclose(np.stack(list(got.values())), expected, rtol=1e-5, atol=1e-9)
    for probs in got.values():
        assert probs.sum() == pytest.approx(1.0, abs=1e-9) and (probs >= 0).all()


def test_a_larger_picture_is_resized_to_32x32(run, test_images, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.fromarray(picture(test_images[0])).resize((96, 96), Image.Resampling.NEAREST).save(big)
    status, out, _ = cli(capsys, "predict", run[0], big, "--json")
    assert status == 0
    (probs,) = predictions(out).values()
    assert probs.shape == (10,) and probs.sum() == pytest.approx(1.0, abs=1e-9)


def test_predict_a_npy_batch_of_pixels_or_model_inputs(run, test_images, tmp_path, capsys):
    channels_last = tmp_path / "pixels.npy"
    np.save(channels_last, np.stack([picture(row) for row in test_images]))  # (4, 32, 32, 3)
    inputs = tmp_path / "inputs.npy"  # already normalized, as load_cifar10 returns them
    mean = load_manifest(run[1]).mean_array()
    np.save(inputs, (test_images[:2] - mean).astype(np.float32).reshape(2, 3, 32, 32))

    status, out, err = cli(capsys, "predict", run[0], channels_last, inputs, "--json")
    assert (status, err) == (0, "")
    got = predictions(out)
    assert list(got) == [f"{channels_last}[{i}]" for i in range(4)] + [
        f"{inputs}[{i}]" for i in range(2)
    ]
    probs = np.stack(list(got.values()))
    expected = expected_probabilities(run, np.concatenate([test_images, test_images[:2]]))
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)


def test_predict_prints_the_top_classes(run, test_images, tmp_path, capsys):
    batch = tmp_path / "batch.npy"
    np.save(batch, test_images)  # (4, 3072) uint8
    status, out, _ = cli(capsys, "predict", run[0], batch, "--top", "2")
    assert status == 0
    names = load_manifest(run[1]).label_names
    expected = expected_probabilities(run, test_images)
    for i, line in enumerate(out.splitlines()):
        best = expected[i].argsort()[::-1][:2]
        assert line.split() == [
            f"{batch}[{i}]",
            names[best[0]],
            f"{expected[i, best[0]]:.3f}",
            names[best[1]],
            f"{expected[i, best[1]]:.3f}",
        ]


# --- bad input: one line, a non-zero exit --------------------------------------------


def bad_inputs(tmp_path, checkpoint):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    np.save(tmp_path / "wrong_size.npy", np.zeros((2, 100), np.uint8))
    np.save(tmp_path / "wide.npy", np.zeros((2, 3, 32, 33), np.uint8))
    np.save(tmp_path / "negative.npy", np.full((1, 3072), -1, np.int16))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "ok.npy", np.zeros((1, 3072), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "cat.gif").write_bytes(b"GIF89a")
    ok = tmp_path / "ok.npy"
    return [
        (["eval", tmp_path / "missing"], "no such checkpoint or directory"),
        (["eval", tmp_path / "empty"], "holds no checkpoint"),
        (["eval", tmp_path / "junk.npz"], "corrupted or truncated checkpoint"),
        (["eval", checkpoint, "--split", "tset"], "invalid choice: 'tset'"),
        (["eval", checkpoint, "--data", tmp_path / "nowhere"], "nowhere"),
        (["predict", tmp_path / "missing", ok], "no such checkpoint or directory"),
        (["predict", checkpoint, tmp_path / "wrong_size.npy"], "got shape (2, 100)"),
        (["predict", checkpoint, tmp_path / "wide.npy"], "got shape (2, 3, 32, 33)"),
        (["predict", checkpoint, tmp_path / "negative.npy"], "must lie in 0..255"),
        (["predict", checkpoint, tmp_path / "objects.npy"], "objects.npy"),
        (["predict", checkpoint, tmp_path / "broken.png"], "not a readable PNG/JPEG image"),
        (["predict", checkpoint, tmp_path / "cat.gif"], "expected a .png, .jpg, .jpeg or .npy"),
        (["predict", checkpoint, tmp_path / "absent.png"], "absent.png: no such file"),
        (["predict", checkpoint, ok, "--top", "0"], "--top must be >= 1"),
    ]


def test_bad_input_is_one_line_and_a_non_zero_exit(run, tmp_path, capsys):
    for argv, message in bad_inputs(tmp_path, run[0]):
        status, out, err = cli(capsys, *argv)
        assert status == 2 and out == "", argv
        assert err.startswith("distnet") and err.count("\n") == 1, (argv, err)
        assert message in err, (argv, err)


def test_pictures_without_the_images_extra_are_one_line_naming_it(
    run, test_images, tmp_path, capsys, monkeypatch
):
    png = tmp_path / "a.png"
    Image.fromarray(picture(test_images[0])).save(png)
    batch = tmp_path / "batch.npy"
    np.save(batch, test_images)
    monkeypatch.setitem(__import__("sys").modules, "PIL", None)  # as if Pillow were absent
    status, _, err = cli(capsys, "predict", run[0], png)
    assert status == 2 and err.count("\n") == 1
    assert "pip install 'distnet-ray[images]'" in err
    assert cli(capsys, "predict", run[0], batch)[0] == 0  # a .npy batch needs nothing more
