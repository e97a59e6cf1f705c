"""The demo on a synthetic multi-person clip (embedded/clip.py) the way a user runs it on a video: one id per
person through a three-frame occlusion, an H.264 overlay video with the input's frame count and rate, per-person
SMPL sequences that smplx's SMPL takes, and meshes that trimesh loads; and phone photos turned upright by EXIF."""
import numpy as np
import pytest
import torch
from PIL import Image

from common.training.checkpoint import save_atomic, to_official_state_dict
from embedded.mannequin import write_mannequin
from main import demo
from main.build import build_model
from main.config import load_config

NUM_FRAMES, FPS = 36, 12.0
SMALL_MODEL = ["resnet_type=18", "pose_head=rot6d", "device=cpu", "hidden_dim=64", "nheads=4",
               "dim_feedforward=128", "voxel_dim_feedforward=128", "enc_layers=1", "dec_layers=2",
               "input_img_shape=[128,128]", "output_hm_shape=[32,32,32]", "princpt=[64.0,64.0]"]


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :5] = 255  # the stored image's left columns are white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones write for portrait photos
    path = tmp_path / "portrait.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    image = demo.read_image(path)
    assert image.shape == (40, 20, 3)  # portrait, as shown by viewers
    assert image[:5].mean() > 200 and image[8:].mean() < 50  # the left columns became the top rows


@pytest.fixture(scope="module")
def clip_world(tmp_path_factory):
    from embedded.bodies import load_bodies
    from embedded.clip import make_clip, write_clip

    root = tmp_path_factory.mktemp("clip_demo")
    paths = write_mannequin(root / "body_models")
    clip = make_clip(load_bodies(root / "body_models"), num_frames=NUM_FRAMES, fps=FPS, seed=0)
    video, keypoints = write_clip(clip, root)
    overrides = [f"smpl_dir={root / 'body_models' / 'smpl'}", f"j_regressor_extra_path={paths['J_regressor_extra']}",
                 *SMALL_MODEL]
    torch.manual_seed(0)
    model = build_model(load_config(None, overrides)).eval()
    ckpt = root / "random.pth.tar"
    save_atomic(to_official_state_dict(model, module_prefix=True), ckpt)
    return {"root": root, "clip": clip, "video": video, "keypoints": keypoints, "overrides": overrides,
            "ckpt": ckpt, "smpl_file": paths["neutral"]}


@pytest.mark.slow
def test_video_demo_tracks_smooths_and_exports(clip_world, tmp_path):
    import smplx
    import trimesh

    from common.video.io import video_info

    w, out = clip_world, tmp_path / "out"
    code = demo.main(["--input", str(w["video"]), "--keypoints", str(w["keypoints"]), "--ckpt", str(w["ckpt"]),
                      "--out", str(out), "--mesh-formats", "obj,ply,glb", *w["overrides"]])
    assert code == 0

    # Playable video: H.264, every input frame, the input's rate and size.
    import av

    with av.open(str(out / "clip_overlay.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    count, rate, size = video_info(out / "clip_overlay.mp4")
    assert count == NUM_FRAMES and rate == FPS and size == w["clip"].frames[0].shape[:2]

    # One id per walker, through the frames where a walker was hidden and undetected (3 frames in a row here).
    detected = [[index for index, detections in enumerate(w["clip"].keypoints) if any(k == walker for k, _ in
                                                                                       detections)]
                for walker in range(3)]
    assert max(np.diff(frames).max() - 1 for frames in detected) >= 3
    tracks = sorted(out.glob("person*_smpl.npz"))
    assert [t.name for t in tracks] == [f"person{k}_smpl.npz" for k in range(3)]
    body = smplx.SMPL(model_path=str(w["smpl_file"]))
    for walker, track in enumerate(tracks):  # ids are given in order of appearance: walker order in frame 0
        seq = np.load(track)
        n = len(detected[walker])
        np.testing.assert_array_equal(seq["frame_ids"], detected[walker])
        shapes = {"global_orient": (n, 3), "body_pose": (n, 69), "betas": (n, 10), "transl": (n, 3), "focal": (2,),
                  "princpt": (2,)}
        assert {k: seq[k].shape for k in shapes} == shapes
        # smplx's SMPL takes the arrays as they are; its mesh is the one the demo wrote for that frame.
        with torch.no_grad():
            verts = body(**{k: torch.from_numpy(seq[k]).float() for k in ("global_orient", "body_pose", "betas",
                                                                           "transl")}).vertices.numpy()
        for i in (0, n - 1):
            stem = out / f"{seq['frame_ids'][i]:06d}_person{walker}"
            obj = trimesh.load(f"{stem}.obj", process=False)
            np.testing.assert_allclose(verts[i], obj.vertices, atol=2e-4)
            for fmt in ("ply", "glb"):
                mesh = trimesh.load(f"{stem}.{fmt}", process=False, force="mesh")
                np.testing.assert_allclose(mesh.vertices, obj.vertices, atol=1e-5)
                np.testing.assert_array_equal(mesh.faces, obj.faces)


@pytest.mark.slow
def test_smoothing_reduces_the_demos_frame_to_frame_jitter(clip_world, tmp_path):
    """With random weights the model's translation jumps between frames; --smooth makes it accelerate less from one
    frame to the next (second differences: the walk itself is steady). The random model's body pose barely moves,
    so rotations are left to tests/test_smoothing.py."""
    w = clip_world
    jitter = {}
    for flag in ("--smooth", "--no-smooth"):
        out = tmp_path / flag
        assert demo.main(["--input", str(w["video"]), "--keypoints", str(w["keypoints"]), "--ckpt", str(w["ckpt"]),
                          "--out", str(out), "--track", flag, *w["overrides"]]) == 0
        seq = np.load(out / "person0_smpl.npz")
        consecutive = np.convolve(np.diff(seq["frame_ids"]) == 1, [1, 1], mode="valid") == 2
        jitter[flag] = np.linalg.norm(np.diff(seq["transl"], 2, axis=0), axis=1)[consecutive].mean()
    assert jitter["--smooth"] < 0.5 * jitter["--no-smooth"]
