"""The occlusion-sensitivity picture on the embedded model (random weights: no trained checkpoint is needed to check
the tool), for a person of a synthetic scene."""
import json

import cv2
import numpy as np
import pytest
import torch

from common.errors import run_entry_point
from common.training.checkpoint import FORMAT, save_atomic
from embedded.mannequin import write_mannequin
from main import occlusion_map
from main.build import build_model
from main.config import load_config


def exit_status(main, argv):
    """The status a user sees: main run as its `python -m` entry point (user errors end with status 2)."""
    with pytest.raises(SystemExit) as stop:
        run_entry_point(main, argv)
    return stop.value.code


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from embedded.bodies import load_bodies
    from embedded.clip import coco_results, make_clip

    root = tmp_path_factory.mktemp("occlusion_map")
    paths = write_mannequin(root / "body_models")
    clip = make_clip(load_bodies(root / "body_models"), num_frames=1, seed=1)
    image = root / "000000.png"
    cv2.imwrite(str(image), clip.frames[0][..., ::-1])
    keypoints = root / "keypoints.json"
    keypoints.write_text(json.dumps(coco_results(clip)))
    overrides = [f"smpl_dir={root / 'body_models' / 'smpl'}", f"j_regressor_extra_path={paths['J_regressor_extra']}",
                 "device=cpu"]
    torch.manual_seed(0)
    model = build_model(load_config("embedded", overrides))
    ckpt = root / "embedded_random.pth.tar"
    save_atomic({"format": FORMAT, "model": model.state_dict()}, ckpt)
    return {"image": image, "keypoints": keypoints, "ckpt": ckpt, "overrides": overrides}


def test_occlusion_map_writes_the_picture_and_the_error_grid(scene, tmp_path):
    out = tmp_path / "map.png"
    code = occlusion_map.main(["--input", str(scene["image"]), "--keypoints", str(scene["keypoints"]), "--ckpt",
                               str(scene["ckpt"]), "--cfg", "embedded", "--out", str(out), "--drop-occluded-joints",
                               *scene["overrides"]])
    assert code == 0
    picture = cv2.imread(str(out))
    side = load_config("embedded").input_img_shape[0]  # the embedded model's crop
    assert picture.shape[0] > side * occlusion_map.PANEL_SCALE
    assert picture.shape[1] > len(occlusion_map.GROUPS) * side * occlusion_map.PANEL_SCALE
    saved = np.load(out.with_suffix(".npz"))
    patch = int(saved["patch"])
    assert patch == side // 4  # a quarter of the crop's side
    corners = saved["top_left"]
    assert corners.shape == (7, 7, 2) and saved["errors"].shape == (7, 7, len(occlusion_map.GROUPS))
    errors = saved["errors"]
    assert np.isfinite(errors).all() and (errors >= 0).all()
    assert list(saved["groups"]) == list(occlusion_map.GROUPS)
    # With the joints under the patch removed as well, the input changes most where the patch covers joints: the
    # largest overall error is at such a position.
    assert errors[..., 0].max() > 0
    x, y = corners[np.unravel_index(errors[..., 0].argmax(), errors.shape[:2])]
    joints = saved["joints_crop"][saved["joints_crop"][:, 2] > 0, :2]
    assert np.all((joints >= [x, y]) & (joints < [x + patch, y + patch]), axis=1).any()


def test_occlusion_map_clear_errors(scene, tmp_path, capsys):
    base = ["--input", str(scene["image"]), "--keypoints", str(scene["keypoints"]), "--cfg", "embedded",
            *scene["overrides"]]
    assert exit_status(occlusion_map.main, [*base, "--ckpt", str(tmp_path / "none.pth.tar")]) == 2
    assert "none.pth.tar" in capsys.readouterr().err
    assert exit_status(occlusion_map.main, [*base, "--ckpt", str(scene["ckpt"]), "--person", "7"]) == 2
    assert "--person 7" in capsys.readouterr().err
