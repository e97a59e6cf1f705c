from pathlib import Path

import pytest


@pytest.fixture
def repo_root() -> Path:
    """The repository root (the directory holding pyproject.toml)."""
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def random_body_model_dir(tmp_path_factory) -> Path:
    """The parity fixture's random (not human-looking) SMPL-layout body model, written as a user's files:
    smpl/SMPL_NEUTRAL.pkl, J_regressor_extra.npy and J_regressor_h36m_correct.npy."""
    from tools.check_parity import write_body_model_files
    from tools.parity_fixture import body_model

    folder = tmp_path_factory.mktemp("body_models")
    write_body_model_files(body_model(), folder)
    return folder


@pytest.fixture(scope="session")
def body(random_body_model_dir):
    """The random (asymmetric) SMPL-layout body model, its J30 and H36M regressors (its H36M regressor has nothing
    to do with its J30)."""
    import numpy as np

    from common.body.body_model import joint_regressor_30, load_smpl

    layer = load_smpl(random_body_model_dir / "smpl")
    extra = np.load(random_body_model_dir / "J_regressor_extra.npy")
    h36m = np.load(random_body_model_dir / "J_regressor_h36m_correct.npy")
    return layer, joint_regressor_30(layer.arrays["J_regressor"], extra), h36m


@pytest.fixture(scope="session")
def paper_cfg(random_body_model_dir):
    """The paper configuration pointed at the random body model."""
    import dataclasses

    from main.config import Config

    return dataclasses.replace(
        Config(), smpl_dir=str(random_body_model_dir / "smpl"),
        j_regressor_extra_path=str(random_body_model_dir / "J_regressor_extra.npy"),
        j_regressor_h36m_path=str(random_body_model_dir / "J_regressor_h36m_correct.npy"), device="cpu")
