"""Overlays, the reference view VizGradCAM and the galleries."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from matplotlib.figure import Figure

from brainmri import explain as ex
from brainmri.plotting import explain as pex


def test_overlay_blends_heatmap_and_image():
    image = np.full((8, 8, 3), 100, np.uint8)
    cam = np.zeros((8, 8), np.float32)
    cam[2:4, 2:4] = 1.0
    assert np.array_equal(ex.overlay(image, cam, interpolant=0.0), image)
    heat = cv2.cvtColor(cv2.applyColorMap(np.uint8(cam * 255), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    assert np.array_equal(ex.overlay(image, cam, interpolant=1.0), heat)
    half = ex.overlay(image, cam, 0.5)
    assert half.dtype == np.uint8 and half.shape == (8, 8, 3)
    assert np.abs(half.astype(int) - (heat.astype(int) + 100) / 2).max() <= 1
    with pytest.raises(ValueError, match="interpolant"):
        ex.overlay(image, cam, 1.5)


def test_viz_gradcam_returns_overlay_heatmap_and_four_panel_figure(cnn, random_images):
    image = random_images(1, 32, seed=12)[0]
    result = ex.VizGradCAM(cnn, image, interpolant=0.4)
    overlay, heatmap = result
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    assert heatmap.shape == image.shape[:2] and 0 <= heatmap.min() <= heatmap.max() <= 1
    assert isinstance(result.figure, Figure) and len(result.figure.axes) == 4
    np.testing.assert_allclose(heatmap, ex.gradcam(cnn, image[None])[0], atol=1e-6)
    assert ex.VizGradCAM(cnn, image, plot_results=False).figure is None


def test_gradcam_overlays_batch(cnn, random_images):
    x = random_images(3, 32, seed=13)
    overlays, maps, probs = ex.gradcam_overlays(cnn, x, 0.5)
    assert overlays.shape == (3, 32, 32, 3) and overlays.dtype == np.uint8
    np.testing.assert_allclose(maps, ex.gradcam(cnn, x), atol=1e-6)
    np.testing.assert_allclose(probs, cnn.predict(x, verbose=0), atol=1e-5)


def test_gallery_and_side_by_side_figures(cnn, square_data):
    x, _, masks = square_data(3, 32, seed=2)
    overlays, maps, _ = ex.gradcam_overlays(cnn, x)
    fig = pex.plot_cam_gallery(x, overlays, ["a", "b", "c"], ncols=2)
    assert len(fig.axes) == 2 * 4
    assert len(pex.plot_cam_gallery(None, overlays, ["a", "b", "c"], ncols=3).axes) == 3
    side = pex.plot_methods_side_by_side(
        x, {"gradcam": maps, "random": ex.random_map(x, 0)}, masks=masks
    )
    assert len(side.axes) == 3 * 3
    with pytest.raises(ValueError, match="maps_by_method"):
        pex.plot_methods_side_by_side(x, {"gradcam": maps[:2]})


def test_cam_gallery_draws_each_image_beside_the_overlay_of_its_method(cnn, square_data):
    x, _, _ = square_data(5, 32, seed=3)
    titles = [f"image {i}" for i in range(5)]
    for method, maps in [
        ("gradcam", ex.gradcam(cnn, x)),
        ("random", ex.random_map(x, 7)),
    ]:
        fig = ex.cam_gallery(
            cnn, x, titles, method=method, layer_name=None, interpolant=0.3, seed=7
        )
        assert isinstance(fig, Figure) and len(fig.axes) == 2 * 2 * 4  # 2 rows of 4 pairs
        for i in range(5):
            row, col = divmod(i, 4)
            image_ax, overlay_ax = fig.axes[row * 8 + col * 2], fig.axes[row * 8 + col * 2 + 1]
            assert image_ax.get_title() == titles[i]
            drawn = np.asarray(overlay_ax.images[0].get_array())
            np.testing.assert_array_equal(drawn, ex.overlay(x[i], maps[i], 0.3), err_msg=method)
    with pytest.raises(ValueError, match="method='bogus'"):
        ex.cam_gallery(cnn, x, titles, method="bogus", layer_name=None, interpolant=0.3)
