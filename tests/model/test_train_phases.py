"""The real training path for each family on a few images: two phases for a pretrained backbone,
resume after a stop, the subtype loss on pneumonia images only, calibration and ensembles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from labelled_folders import labelled_tree

from pneumoscreen.model import calibration as C
from pneumoscreen.model.dataset import load_arrays, make_dataset, scan_labelled, subtype_labels
from pneumoscreen.model.progress import Silent
from pneumoscreen.model.train import STATE_NAME, TrainConfig, resume_config, train

SIZE = 32



def _pretrained_file(tmp_path: Path) -> Path:
    """A MobileNetV2 alpha 0.35 backbone with random weights saved as a weights file, standing in
    for the ImageNet file so the two-phase path runs without ../shared."""
    import keras

    keras.utils.set_random_seed(3)
    base = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35,
                                          include_top=False, weights=None)
    path = tmp_path / "fake_imagenet.weights.h5"
    base.save_weights(path)
    return path


class _StopAfter(Silent):
    """Stops training by raising out of the first epoch report (a kill, seen from Python)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def note(self, text: str) -> None:
        if text.startswith("epoch "):
            self.n -= 1
            if self.n <= 0:
                raise KeyboardInterrupt("stopped for the test")


def test_pretrained_backbone_trains_in_two_phases_and_resumes(tmp_path: Path) -> None:
    """Also ``--lung-crop --register-chest``: the crop and the registration survive the resume
    and land in the sidecar, the template is the training split's own mean film, and the saved
    model's heatmaps cover the full frame."""
    from pneumoscreen.model import registration
    from pneumoscreen.model.architectures import LUNG_CROP
    from pneumoscreen.model.bundle import load_model
    from pneumoscreen.model.gradcam import FRAME_GRID

    data = labelled_tree(tmp_path / "data")
    cfg = TrainConfig(data_dir=data, out_dir=tmp_path / "run", arch="mobilenetv2",
                      init=str(_pretrained_file(tmp_path)), input_size=48, epochs=2,
                      head_epochs=1, batch_size=4, n_boot=50, augment="strong", patience=5,
                      lung_crop=True, register_chest=True)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, _StopAfter(2))  # the head phase's epoch, then the first fine-tuning epoch
    state = json.loads((tmp_path / "run" / STATE_NAME).read_text())
    assert state["done"] == ["head"]
    assert not (tmp_path / "run" / "model.keras").exists()

    again = resume_config(tmp_path / "run")
    assert again.arch == "mobilenetv2" and again.epochs == 2 and again.lung_crop
    assert again.register_chest
    result = train(again)
    phases = result.spec.extra["training"]["phases"]
    assert list(phases) == ["head", "finetune"]
    assert phases["head"]["epochs_run"] == 1 and phases["finetune"]["epochs_run"] == 2
    assert len(result.history["loss"]) == 3
    assert result.spec.extra["architecture"]["name"] == "mobilenetv2"
    assert result.spec.extra["calibration"]["method"] == "temperature"
    assert result.internal_test["subtype"]["n"] >= 1
    # The guard measures MobileNetV2's middle block as well as the features.
    assert result.spec.extra["atypicality"]["layers"] == ["features", "block_8_add"]
    # The finished run keeps only what serving needs.
    assert not (tmp_path / "run" / "backup").exists()
    assert result.spec.extra["architecture"]["crop"] == list(LUNG_CROP)
    assert result.spec.extra["architecture"]["register_chest"] == registration.describe()
    loaded = load_model(result.model_path)
    parts = result.split.parts()
    mine = registration.register_layer(loaded.keras_model).template
    np.testing.assert_allclose(mine, registration.mean_chest(load_arrays(parts["train"], 48).x),
                               atol=1e-6)
    everything = [s for part in parts.values() for s in part]
    assert np.abs(mine - registration.mean_chest(load_arrays(everything, 48).x)).max() > 1e-3
    x = np.random.default_rng(0).random((2, 48, 48, 1), dtype=np.float32)
    assert loaded.heatmaps(x).shape == (2, FRAME_GRID, FRAME_GRID)


@pytest.mark.parametrize("arch", ["cnn-xs", "mobilenet"])
def test_each_family_trains_from_scratch(tmp_path: Path, arch: str) -> None:
    from pneumoscreen.model.bundle import load_model

    data = labelled_tree(tmp_path / "data")
    result = train(TrainConfig(data_dir=data, out_dir=tmp_path / arch, arch=arch, init="none",
                               input_size=SIZE, epochs=1, batch_size=4, n_boot=20))
    loaded = load_model(result.model_path)
    scores = loaded.predict(np.zeros((2, SIZE, SIZE, 1), np.float32))
    assert scores.pneumonia.shape == (2,) and scores.viral is not None
    assert list(result.spec.extra["training"]["phases"]) == ["full"]


def test_the_subtype_loss_ignores_normal_images(tmp_path: Path) -> None:
    """Changing the viral target of a normal image changes nothing: its weight is zero."""
    import keras

    from pneumoscreen.model.architectures import build
    from pneumoscreen.model.train import Phase, _compile

    data = labelled_tree(tmp_path / "data")
    samples = scan_labelled(data / "train")
    arrays = load_arrays(samples, SIZE)
    viral = subtype_labels(arrays.samples)
    assert set(viral[arrays.y == 0].tolist()) == {-1} and set(viral[arrays.y == 1]) == {0, 1}
    keras.utils.set_random_seed(0)
    model = build("cnn-xs", SIZE)
    head = model.get_layer("viral_logit")
    head.set_weights([head.get_weights()[0], np.array([2.0], np.float32)])  # p(viral) ~ 0.88
    _compile(model, TrainConfig(data_dir=data, out_dir=tmp_path), Phase("full", 1, 1e-3, False,
                                                                         False, False), 1)

    def loss(viral_targets: np.ndarray) -> float:
        ds = make_dataset(arrays.x, arrays.y, batch_size=64, training=False, viral=viral_targets)
        return float(model.evaluate(ds, verbose=0, return_dict=True)["viral_loss"])

    flipped = viral.copy()
    flipped[arrays.y == 0] = 1  # a normal image "labelled" viral
    assert loss(viral) == pytest.approx(loss(flipped), abs=1e-7)
    other = viral.copy()
    other[arrays.y == 1] = 1  # the pneumonias' labels do count
    assert loss(viral) != pytest.approx(loss(other), abs=0.05)


class TestCalibration:
    def test_fit_recovers_the_temperature(self) -> None:
        rng = np.random.default_rng(0)
        logits = rng.normal(0, 3, 20_000)
        y = (rng.random(20_000) < 1 / (1 + np.exp(-logits))).astype(int)
        overconfident = 1 / (1 + np.exp(-2.5 * logits))  # logits scaled by 2.5
        assert C.fit_temperature(y, overconfident) == pytest.approx(2.5, rel=0.05)

    def test_calibrated_model_applies_the_temperature(self) -> None:
        from pneumoscreen.model.architectures import build

        model = build("cnn-xs", SIZE)
        x = np.random.default_rng(1).random((4, SIZE, SIZE, 1), dtype=np.float32)
        raw = np.asarray(model(x, training=False)["pneumonia"]).reshape(-1)
        cal = C.calibrated_model(model, 2.0)
        got = np.asarray(cal(x, training=False)["pneumonia"]).reshape(-1)
        np.testing.assert_allclose(got, C.apply_temperature(raw, 2.0), atol=1e-5)
        viral = np.asarray(model(x, training=False)["viral"])
        np.testing.assert_allclose(np.asarray(cal(x, training=False)["viral"]), viral)


def test_the_ensembles_one_call_is_the_mean_of_its_members() -> None:
    import keras

    from pneumoscreen.model.architectures import build
    from pneumoscreen.model.ensemble import build_ensemble

    members: list[Any] = []
    for seed, temperature in ((0, 1.0), (1, 2.0)):
        keras.utils.set_random_seed(seed)
        members.append(C.calibrated_model(build("cnn-xs", SIZE), temperature))
    x = np.random.default_rng(2).random((5, SIZE, SIZE, 1), dtype=np.float32)
    ens = build_ensemble(members, SIZE)
    out = ens(x, training=False)
    member_p = [np.asarray(m(x, training=False)["pneumonia"]).reshape(-1) for m in members]
    member_v = [np.asarray(m(x, training=False)["viral"]).reshape(-1) for m in members]
    mean_logit = np.mean([C.logit(p) for p in member_p], axis=0)
    np.testing.assert_allclose(np.asarray(out["pneumonia"]).reshape(-1),
                               1 / (1 + np.exp(-mean_logit)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["viral"]).reshape(-1), np.mean(member_v, axis=0),
                               atol=1e-6)


def test_make_ensemble_end_to_end(tmp_path: Path) -> None:
    from pneumoscreen.model.bundle import load_model
    from pneumoscreen.model.ensemble import EnsembleError, make_ensemble

    data = labelled_tree(tmp_path / "data")
    runs = [train(TrainConfig(data_dir=data, out_dir=tmp_path / f"m{s}", arch="cnn-xs",
                              input_size=SIZE, epochs=1, batch_size=4, n_boot=20, seed=s))
            for s in (1, 2)]
    result = make_ensemble([r.model_path for r in runs], tmp_path / "ens", data, n_boot=20)
    loaded = load_model(result.model_path)
    assert loaded.spec.extra["architecture"]["name"] == "ensemble"
    assert len(loaded.spec.extra["architecture"]["members"]) == 2
    assert 0 < loaded.spec.threshold < 1 and result.tuned.validation["recall"] >= 0.95
    assert (tmp_path / "ens" / "split_manifest.json").is_file()
    # A member from another patient split (its manifest files one film elsewhere) is refused.
    other = shutil.copytree(runs[1].model_path.parent, tmp_path / "other")
    manifest = json.loads((other / "split_manifest.json").read_text())
    moved = next(iter(manifest["files"]))
    manifest["files"][moved]["split"] = next(
        part for part in ("train", "validation", "internal-test")
        if part != manifest["files"][moved]["split"])
    (other / "split_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EnsembleError, match="another patient split"):
        make_ensemble([runs[0].model_path, other / runs[1].model_path.name], tmp_path / "bad",
                      data)


def test_finish_ends_a_stopped_run_at_its_best_epoch(tmp_path: Path) -> None:
    """``--resume --finish``: no further epoch; the best one so far is calibrated and saved."""
    data = labelled_tree(tmp_path / "data")
    cfg = TrainConfig(data_dir=data, out_dir=tmp_path / "run", arch="cnn-xs", input_size=SIZE,
                      epochs=4, batch_size=4, n_boot=20, patience=5)
    with pytest.raises(ValueError, match="no epoch has finished"):
        train(cfg, _StopAfter(1), finish=True)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, _StopAfter(2))  # two epochs of four
    counted = _StopAfter(99)
    result = train(resume_config(tmp_path / "run"), counted, finish=True)
    assert counted.n == 99  # not one epoch more
    full = result.spec.extra["training"]["phases"]["full"]
    assert full["epochs_run"] == 2 and full["best_epoch"] in (1, 2)
    assert full["seconds"] > 0
    assert result.model_path.is_file() and result.validation["n"] > 0


@pytest.mark.parametrize(("options", "message"), [
    ({"arch": "cnn-s", "lung_crop": True}, "no --lung-crop"),
    ({"arch": "mobilenetv2", "register_chest": True}, "needs --lung-crop")])
def test_a_crop_or_registration_that_cannot_be_fails_before_any_work(
        tmp_path: Path, options: dict[str, Any], message: str) -> None:
    cfg = TrainConfig(data_dir=tmp_path, out_dir=tmp_path / "run", **options)
    with pytest.raises(ValueError, match=message):
        train(cfg)
    assert not (tmp_path / "run").exists()  # no split, no arrays, no config written
