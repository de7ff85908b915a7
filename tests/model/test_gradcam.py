"""Grad-CAM: batched maps in [0, 1] on the last conv block; an ensemble's is its members' mean."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoscreen.model import gradcam
from pneumoscreen.model.architectures import build
from pneumoscreen.model.calibration import calibrated_model

SIZE = 32


def _x(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 1), dtype=np.float32)


def test_maps_of_a_single_model() -> None:
    model = calibrated_model(build("cnn-s", SIZE), 1.5)
    targets = gradcam.targets(model, {"architecture": {"last_conv": "b3_relu1"}})
    maps = gradcam.compute(targets, _x())
    assert maps.shape == (4, 4, 4)  # 32 px through three pools: the last block's 4 x 4 grid
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    # Batched equals one at a time.
    one = np.stack([gradcam.compute(targets, _x()[i:i + 1])[0] for i in range(4)])
    np.testing.assert_allclose(maps, one, atol=1e-5)


def test_an_ensembles_map_is_the_mean_of_its_members() -> None:
    import keras

    from pneumoscreen.model.ensemble import build_ensemble

    members = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        members.append(calibrated_model(build("cnn-xs", SIZE), 1.0))
    ens = build_ensemble(members, SIZE)
    extra = {"architecture": {"members": [{"last_conv": "b3_relu1"}] * 2}}
    got = gradcam.compute(gradcam.targets(ens, extra), _x())
    each = [gradcam.compute(gradcam.targets(m, {"architecture": {"last_conv": "b3_relu1"}}),
                            _x()) for m in members]
    want = gradcam._normalise(np.mean(each, axis=0))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_storage_round_trip() -> None:
    cam = np.random.default_rng(0).random((7, 7)).astype(np.float32)
    back = gradcam.from_bytes(gradcam.to_bytes(cam), 7, 7)
    np.testing.assert_allclose(back, cam, atol=1e-3)
    assert len(gradcam.to_bytes(cam)) == 7 * 7 * 2


def test_border_mass_of_known_maps() -> None:
    uniform = np.ones((1, 10, 10), np.float32)
    centre = np.zeros((1, 10, 10), np.float32)
    centre[0, 4:6, 4:6] = 1
    corner = np.zeros((1, 10, 10), np.float32)
    corner[0, 0, 0] = 1
    mass = gradcam.border_mass(np.concatenate([uniform, centre, corner]))
    assert mass["border"][0] == pytest.approx(0.36, abs=0.01)
    assert mass["border"][1] < 0.01 and mass["border"][2] > 0.9
    assert mass["top_corners"][2] > 0.9


def test_overlay_is_labelled_rgb_at_display_size() -> None:
    img = gradcam.overlay(_x(1)[0], np.eye(4, dtype=np.float32), size=128)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert img[-10:, :60].mean() > 20  # the white label on its black band


def test_a_cropping_networks_map_covers_the_full_frame() -> None:
    """A network that sees only a box: its map lies over that box's pixels (the crop layer's,
    not a rounding of the sidecar's fractions) in a full-frame grid, zero outside, so the
    film's top corners get no mass when the box leaves them out."""
    from pneumoscreen.model.architectures import LUNG_CROP, crop_pixels

    size = 96
    model = calibrated_model(build("mobilenetv2", size, "none", crop=LUNG_CROP), 1.0)
    targets = gradcam.targets(model, {"architecture": {"last_conv": "out_relu"}})
    (top, bottom), (left, right) = crop_pixels(size, LUNG_CROP)
    assert targets[0].crop == (size, top, bottom, left, right)
    x = np.random.default_rng(0).random((3, size, size, 1), dtype=np.float32)
    maps = gradcam.compute(targets, x)
    g = gradcam.FRAME_GRID
    assert maps.shape == (3, g, g)
    # Cells wholly outside the box's pixels are zero; the box itself is not.
    cell = size / g
    edges = np.arange(g + 1) * cell
    out_rows = (edges[1:] <= top) | (edges[:-1] >= size - bottom)
    out_cols = (edges[1:] <= left) | (edges[:-1] >= size - right)
    assert maps[:, out_rows].max() == 0 and maps[:, :, out_cols].max() == 0
    assert maps[:, ~out_rows][:, :, ~out_cols].max() > 0
    # Only a sliver of the top corners is in the box: below a uniform full-frame map's 0.08.
    assert gradcam.border_mass(maps)["top_corners"].max() < 0.08


def test_a_registering_networks_map_moves_with_the_chest() -> None:
    """``--register-chest``: the box follows the chest, and so do the map and the cells counted
    as seen. The same film moved down: its map and region move down with it, and the map is
    (all but the bilinear edge) zero outside the film's own region."""
    import keras
    from made_chest import chest, moved

    from pneumoscreen.model import registration
    from pneumoscreen.model.architectures import LUNG_CROP

    size, g = 96, gradcam.FRAME_GRID
    film = chest(size)
    template = registration.mean_chest(film[None, ..., None])
    model = calibrated_model(build("mobilenetv2", size, "none", crop=LUNG_CROP,
                                   template=template), 1.0)
    targets = gradcam.targets(model, {"architecture": {"last_conv": "out_relu"}})
    assert targets[0].register is not None
    # The map's model starts at the registered film: each film is registered once per map, and
    # it gives what the whole network gives from the film as sent.
    assert registration.REGISTER_LAYER not in {lay.name for lay in targets[0].model.layers}
    x = np.stack([film, moved(film, 1.0, 0.125, 0.0)])[..., None]
    whole = keras.Model(model.input, [model.get_layer("out_relu").output,
                                      gradcam._score_tensor(model)])
    seen, _ = gradcam.registered(targets[0].register, x)
    for got, want in zip(targets[0].model(seen), whole(x), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    maps = gradcam.compute(targets, x)
    region = gradcam.seen_region(model, (g, g), x)
    assert region.shape == (2, g, g)
    first_row = [int(np.argmax(r.any(axis=1))) for r in region]
    assert first_row[0] == pytest.approx(LUNG_CROP[0] * g, abs=1)  # as sent: where it always is
    assert first_row[1] - first_row[0] == pytest.approx(0.125 * g, abs=1.5)
    outside = [(m * ~r).sum() / m.sum() for m, r in zip(maps, region, strict=True)]
    assert max(outside) < 0.05, outside
    # Where the map of the film as sent lies, moved down with the film: the moved film's map.
    centre = lambda m: (m * np.arange(g)[:, None]).sum() / m.sum()  # noqa: E731
    assert centre(maps[1]) - centre(maps[0]) == pytest.approx(0.125 * g, abs=2)
    with pytest.raises(ValueError, match="pass inputs"):
        gradcam.seen_region(model, (g, g))


def test_an_ensemble_of_a_registering_and_a_plain_member_gives_one_map_per_film() -> None:
    from made_chest import chest, moved

    from pneumoscreen.model import registration
    from pneumoscreen.model.architectures import LUNG_CROP
    from pneumoscreen.model.ensemble import build_ensemble

    size = 96
    film = chest(size)
    template = registration.mean_chest(film[None, ..., None])
    registering = calibrated_model(build("mobilenetv2", size, "none", crop=LUNG_CROP,
                                         template=template), 1.0)
    plain = calibrated_model(build("mobilenetv2", size, "none"), 1.0)
    ensemble = build_ensemble([registering, plain], size)
    targets = gradcam.targets(ensemble, {})
    assert [t.register is not None for t in targets] == [True, False]
    x = np.stack([film, moved(film, 1.0, 0.125, 0.0)])[..., None]
    maps = gradcam.compute(targets, x)
    assert maps.shape[0] == 2 and np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() == pytest.approx(1.0)


def test_in_frame_puts_each_cell_over_the_pixels_it_covers() -> None:
    """A 2 x 2 grid of a 48-px box inside a 64-px input, stride 32: the cells cover 64 px from
    the box's corner, the second row and column only partly inside the box."""
    maps = np.zeros((1, 2, 2), np.float32)
    maps[0, 0, 0] = 1.0  # only the top-left cell is hot
    framed = gradcam.in_frame(maps, (64, 8, 8, 8, 8), grid=64)  # box: pixels 8..56
    assert framed.shape == (1, 64, 64)
    assert framed[0, :8].max() == 0 and framed[0, 56:].max() == 0 and framed[0, :, :8].max() == 0
    # The cells' centres are 16 and 48 px from the box's top (stride 32), so the map falls to
    # half way between them at 32 px, row 40; stretched over the 48-px box (centres 12 and 36)
    # it would fall to half at row 32.
    column = framed[0, :, 12]  # inside the hot cell's columns, where only the rows change
    assert column[40] == pytest.approx(0.5, abs=0.08) and column[32] > 0.65
