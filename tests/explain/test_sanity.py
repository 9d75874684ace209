"""The model-parameter randomisation check: map correlations, the verdict, the cascade."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from brainmri import config
from brainmri import explain as ex


def test_rank_correlation_scores_flat_maps_zero_and_ranks_the_rest():
    rng = np.random.default_rng(0)
    base = rng.random((3, 6, 6)) + 0.1
    other = base.copy()
    other[0] = base[0] ** 3  # the same ranks, other values: 1
    other[1] = -base[1]  # every rank reversed: -1
    other[2] = 0.0  # turned flat: no ranks, scored 0 rather than NaN
    rho = ex.rank_correlation(base, other)
    np.testing.assert_allclose(rho, [1.0, -1.0, 0.0])
    # flat on the trained side, or on both, scores 0 too
    np.testing.assert_array_equal(ex.rank_correlation(np.zeros((2, 4, 4)), base[:2, :4, :4]), 0)
    np.testing.assert_array_equal(ex.rank_correlation(np.zeros((1, 4, 4)), np.ones((1, 4, 4))), 0)
    with pytest.raises(ValueError, match="equal shape"):
        ex.rank_correlation(base, base[:2])


def _maps_with_known_similarity() -> tuple[np.ndarray, np.ndarray]:
    """Four trained maps and randomised ones: kept (rho 1), reversed (-1), flat (0), half kept."""
    rng = np.random.default_rng(1)
    trained = rng.random((4, 8, 8)) + 0.1
    randomised = np.stack([trained[0] * 2, 1 - trained[1], np.zeros((8, 8)), trained[3] ** 2])
    return trained, randomised


def test_randomisation_check_counts_flat_maps_as_changed_and_judges_the_share():
    trained, randomised = _maps_with_known_similarity()
    check = ex.randomization_check(trained, randomised)
    json.dumps(check, allow_nan=False)
    np.testing.assert_allclose(check["spearman_per_image"], [1.0, -1.0, 0.0, 1.0])
    assert check["spearman_mean"] == pytest.approx(0.25)
    assert (check["n_flat"], check["n_flat_trained"], check["n_flat_randomised"]) == (1, 0, 1)
    # changed: the reversed map and the flat one; the rescaled and squared maps kept their ranks
    assert check["n_changed"] == 2 and check["share_changed"] == 0.5
    assert check["max_correlation"] == 0.5 and check["min_share_changed"] == 0.75
    assert not check["passed"]  # 0.5 < 0.75
    assert ex.randomization_check(trained, randomised, min_share_changed=0.5)["passed"]
    # no logits given: no spread, no degeneracy verdict
    assert check["logit_spread_randomised"] is None and check["degenerate"] is None


def test_all_flat_randomised_maps_pass_the_check_with_the_spread_beside_them():
    """A map that turns flat has changed completely: a pass, not a failure (issue 32 item 7)."""
    trained = np.random.default_rng(0).random((4, 8, 8))
    logits = np.array([[1.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0, 0], [3, 2, 0, 0]])
    constant = np.tile([0.5, -0.5, 0.0, 0.0], (4, 1))  # a dead network: its biases only
    check = ex.randomization_check(
        trained, np.zeros_like(trained), trained_logits=logits, randomised_logits=constant
    )
    assert check["spearman_per_image"] == [0.0] * 4 and check["n_flat_randomised"] == 4
    assert check["share_changed"] == 1.0 and check["passed"]
    # spread: per class the std over images (1, 1, 0, 0), averaged; class offsets do not count
    assert check["logit_spread_trained"] == pytest.approx(0.5)
    assert check["logit_spread_randomised"] == 0.0 and check["degenerate"] is True
    lively = ex.randomization_check(
        trained, np.zeros_like(trained), trained_logits=logits, randomised_logits=logits * 0.5
    )
    assert lively["logit_spread_randomised"] == pytest.approx(0.25)
    assert lively["degenerate"] is False


def test_unknown_randomisation_options_and_baselines_are_refused(cnn, random_images):
    x = random_images(2, 32, seed=0)
    with pytest.raises(TypeError, match="reestimate"):
        ex.randomization_maps(cnn, x, seed=0, reestimate=False)
    with pytest.raises(ValueError, match="method='random'"):
        ex.cascading_randomization(cnn, x, seed=0, method="random")


def test_layer_groups_run_from_the_output_to_the_input(make_cnn):
    groups = ex.layer_groups(make_cnn(seed=1))
    assert groups == [
        ("logits", ["logits"]),
        ("head_dense1", ["head_dense1"]),
        ("conv2", ["conv2", "bn2"]),
        ("conv1", ["conv1"]),
    ]


def test_cascading_randomization_ends_in_the_full_check(make_cnn, square_data):
    model = make_cnn(seed=3)
    x, y, _ = square_data(64, 32, seed=0)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    result = ex.cascading_randomization(model, x[:8], seed=0)
    json.dumps(result, allow_nan=False)
    assert [s["layer"] for s in result["steps"]] == [g for g, _ in ex.layer_groups(model)]
    for step in result["steps"]:
        for key in ("cascading", "independent"):
            assert -1.0 <= step[key] <= 1.0  # flat maps score 0: never undefined
            assert 0 <= step[f"{key}_flat"] <= 8 and 0.0 <= step[f"{key}_changed"] <= 1.0
    # The last cascading step re-initialises everything: the plain check's randomised model.
    full = ex.randomization_check(*ex.randomization_maps(model, x[:8], seed=0))
    assert result["steps"][-1]["cascading"] == pytest.approx(full["spearman_mean"])
    assert result["steps"][-1]["cascading_changed"] == full["share_changed"]
    assert result["spearman_mean"] == pytest.approx(full["spearman_mean"])
    assert result["passed"] == full["passed"] and result["method"] == "gradcam"
    assert result["batchnorm_reestimated"]
    # the spreads of the trained model and of the fully randomised one, which is not degenerate
    assert result["logit_spread_trained"] > 0 and result["logit_spread_randomised"] > 0
    assert result["degenerate"] is False
    # Randomising one group alone is the cascade's first step when it is the top group.
    assert result["steps"][0]["independent"] == pytest.approx(result["steps"][0]["cascading"])


@pytest.mark.slow
def test_randomisation_lowers_the_map_correlation(trained_phantom):
    """Maps of a model trained on phantoms do not survive re-initialising its weights."""
    from brainmri import inputs as inp

    model, root, size, _ = trained_phantom
    files = [
        f for c in config.CLASS_NAMES for f in sorted((root / "Testing" / c).glob("*.jpg"))[:2]
    ]
    maps = ex.randomization_maps(model, inp.load_batch(files, size), seed=0)
    check = ex.randomization_check(*maps)
    assert check["n_flat_randomised"] < check["n_images"] / 2  # BatchNorm re-estimated: alive
    assert check["spearman_mean"] < 0.5 and check["passed"]
    # A threshold no correlation can undercut fails it: the verdict is not a constant.
    assert not ex.randomization_check(*maps, max_correlation=-1)["passed"]


def test_the_index_page_calls_all_flat_randomised_maps_a_pass():
    """The report reads the check's keys: flat maps changed, so the verdict is no failure."""
    from brainmri.reports import index

    trained = np.random.default_rng(0).random((4, 8, 8))
    logits = np.random.default_rng(1).normal(size=(4, 4))
    flat = ex.randomization_check(
        trained, np.zeros_like(trained), trained_logits=logits, randomised_logits=logits * 0
    )
    verdict = index.sanity_verdict({"gradcam": {"randomization": flat}})
    assert verdict.startswith("Randomisation check passed: 4 of 4 maps changed")
    assert "4 flat" in verdict and "100% where 75% is required" in verdict
    assert "Logit spread of the randomised network 0.000" in verdict and "degenerate" in verdict
    kept = ex.randomization_check(trained, trained**2)  # every map keeps its ranks
    verdict = index.sanity_verdict({"gradcam": {"randomization": kept}})
    assert verdict.startswith("Randomisation check FAILED: 0 of 4 maps changed")
    assert "Logit spread" not in verdict  # no logits given
