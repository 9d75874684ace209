"""Which profile `make all` runs when none is named: the given one, else the reference recipe
when real data is at hand (DATA_DIR, an earlier download, Kaggle credentials), else the offline
demo. Only the standard library: `make all` asks before the environment exists."""

from __future__ import annotations

import os
from pathlib import Path

REAL_DATA_PROFILE = "default"
OFFLINE_PROFILE = "demo"


def kaggle_credentials_present(root: Path, env: dict[str, str] | None = None) -> bool:
    """True when Kaggle credentials exist (env vars or a kaggle.json); never reads the key.

    Args:
        root: the project folder (a kaggle.json there counts).
        env: the environment; None reads os.environ.

    Returns:
        Whether credentials are present.
    """
    env = dict(os.environ) if env is None else env
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return True
    home = Path(env.get("HOME", Path.home()))
    config_dir = (
        Path(env["KAGGLE_CONFIG_DIR"]) if env.get("KAGGLE_CONFIG_DIR") else home / ".kaggle"
    )
    return (config_dir / "kaggle.json").is_file() or (root / "kaggle.json").is_file()


def choose_profile(
    root: Path, profile: str | None, data_dir: str | None, env: dict[str, str] | None = None
) -> tuple[str, str]:
    """The profile `make all` runs: the given one, else default with real data available, else
    demo.

    Args:
        root: the project folder.
        profile: PROFILE, or None.
        data_dir: DATA_DIR, or None.
        env: the environment (Kaggle credentials); None reads os.environ.

    Returns:
        ``(profile, reason)``.

    Raises:
        ParamError: the profile name is not a plain name, or DATA_DIR is given but does not
            hold the data set (a mistyped DATA_DIR must not quietly run the phantom demo).
    """
    from brainmri.config import ParamError, check_profile_name  # standard library only

    if data_dir and not (
        (Path(data_dir) / "Training").is_dir() or any(Path(data_dir).glob("*/Training"))
    ):
        raise ParamError(
            f"DATA_DIR={data_dir}: no Training/ folder there or one level down (expected the "
            "Kaggle layout: Training/<class>/ and Testing/<class>/)"
        )
    if profile:
        return check_profile_name(profile), "chosen with PROFILE"
    if data_dir:
        return REAL_DATA_PROFILE, f"DATA_DIR={data_dir} holds the dataset"
    if (root / "data" / "brain-tumor-mri-dataset").is_dir():
        return REAL_DATA_PROFILE, "the Kaggle dataset was downloaded before (data/)"
    if kaggle_credentials_present(root, env):
        return REAL_DATA_PROFILE, "Kaggle credentials are present"
    return OFFLINE_PROFILE, "no DATA_DIR, no downloaded dataset and no Kaggle credentials"


def choice_line(profile: str, reason: str) -> str:
    """The first line `make all` prints: the profile, why, and how to pick another.

    Args:
        profile: the chosen profile.
        reason: why (:func:`choose_profile`).

    Returns:
        One line.
    """
    other = (
        f"make all PROFILE={OFFLINE_PROFILE}"
        if profile != OFFLINE_PROFILE
        else f"make all DATA_DIR=/path/to/brain-tumor-mri-dataset (or PROFILE={REAL_DATA_PROFILE} "
        "with Kaggle credentials)"
    )
    return f"profile: {profile} ({reason}); for another: {other}"
