"""Short videos from the synthetic scene generator: people walking across a fixed camera's view, one of them passing
behind another, with detector-like COCO-17 2D poses per frame.

The people are the mannequin bodies of the benchmark, rendered with its scene renderer (embedded.render; same
background, lighting and noise in every frame), so the clip looks like the benchmark's test images in motion. Their
walk is a lateral glide on the floor with swinging legs and arms (sinusoids on the hips, knees and shoulders).
A person's 2D pose comes from embedded.detections.detector_pose (noise, dropped occluded joints); a person hidden
more than `miss_occlusion` gets no detection in that frame, as a detector misses a hidden person.

    python -m embedded.clip OUT_DIR [--frames 36] [--fps 12] [--seed 0]

writes OUT_DIR/clip.mp4 (H.264) and OUT_DIR/clip_keypoints.json (COCO results: one entry per detection with
image_id = frame index), the inputs of `python -m main.demo --input OUT_DIR/clip.mp4 --keypoints ...`; it needs
the mannequin body model (written to OUT_DIR/body_models unless --body-models points at one).
"""
import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from common.body.joint_sets import COCO17
from common.video.io import H264Writer
from embedded.bodies import load_bodies
from embedded.camera import global_orient, sample_camera
from embedded.detections import COCO_IN_SMPL30, detector_pose
from embedded.mannequin import write_mannequin
from embedded.poses import sample_betas
from embedded.render import render_scene
from embedded.scene import DEFAULT_IMAGE_SIZE, Person, place_on_floor
from embedded.textures import person_colours

MISS_OCCLUSION = 0.6
# SMPL joint indices of the swinging joints and the axis-angle component (SMPL frame, x = the person's left) that
# swings them forward and back.
_L_HIP, _R_HIP, _L_KNEE, _R_KNEE, _L_SHOULDER, _R_SHOULDER = 1, 2, 4, 5, 16, 17


@dataclasses.dataclass
class Walker:
    """One person of a clip: gender, betas (10,), start (u pixels, depth z metres), speed (metres per second along
    the image's x axis; 0 stands), yaw (radians; which way the body faces), stride (steps per second)."""
    gender: str
    betas: np.ndarray
    start: tuple
    speed: float
    yaw: float
    stride: float = 1.8


@dataclasses.dataclass
class Clip:
    """frames: list of (H, W, 3) uint8 RGB; people: per frame, the rendered embedded.scene.Person list (same order
    as the walkers); keypoints: per frame, [(walker index, (17, 3) COCO x, y, confidence)] of the detected people;
    fps; camera (embedded.camera.Camera)."""
    frames: list
    people: list
    keypoints: list
    fps: float
    camera: object


def default_walkers(rng):
    """Two people crossing (the farther one passes behind the nearer one mid-clip) and one standing aside."""
    return [Walker("male", sample_betas(rng), (0.25, 5.0), 0.9, np.deg2rad(60)),
            Walker("female", sample_betas(rng), (0.75, 6.5), -0.9, np.deg2rad(-60)),
            Walker("female", sample_betas(rng), (0.88, 8.0), 0.0, np.deg2rad(-20), stride=0.5)]


def walking_pose(camera, walker, t):
    """(72,) SMPL pose of `walker` at time t (seconds)."""
    pose = np.zeros((24, 3))
    pose[0] = global_orient(camera, walker.yaw, np.zeros(3))
    swing = np.sin(2 * np.pi * walker.stride / 2 * t)
    amplitude = 0.45 if walker.speed else 0.25
    pose[_L_HIP, 0], pose[_R_HIP, 0] = -amplitude * swing, amplitude * swing
    pose[_L_KNEE, 0] = 0.6 * amplitude * (1 + swing)
    pose[_R_KNEE, 0] = 0.6 * amplitude * (1 - swing)
    pose[_L_SHOULDER, 2], pose[_R_SHOULDER, 2] = -1.2, 1.2  # arms down from the T pose
    pose[_L_SHOULDER, 0], pose[_R_SHOULDER, 0] = amplitude * swing, -amplitude * swing
    return pose.reshape(-1)


def make_clip(bodies, num_frames=36, fps=12.0, seed=0, image_size=DEFAULT_IMAGE_SIZE, walkers=None,
              miss_occlusion=MISS_OCCLUSION):
    """Render a Clip (see the module docstring) of `num_frames` frames; bodies: embedded.bodies.Bodies."""
    rng = np.random.default_rng(seed)
    camera = sample_camera(rng, image_size)
    walkers = default_walkers(rng) if walkers is None else walkers
    looks = [person_colours(rng) for _ in walkers]
    render_seed, noise_seed = rng.integers(1 << 31), rng.integers(1 << 31)
    noise_rng = np.random.default_rng(noise_seed)
    width = image_size[1]
    clip = Clip([], [], [], float(fps), camera)
    for index in range(num_frames):
        t = index / fps
        people = []
        for walker, (colours, stripes) in zip(walkers, looks):
            u, z = walker.start
            x = (u * width - camera.princpt[0]) / camera.focal * z + walker.speed * t
            pose = walking_pose(camera, walker, t)
            verts, joints = bodies.forward(walker.gender, pose[None], np.asarray(walker.betas)[None])
            ground = np.array([x, z])
            trans = place_on_floor(verts[0], joints[0], camera, ground)
            people.append(Person(walker.gender, "walking", pose, np.asarray(walker.betas), trans, verts[0] + trans,
                                 joints[0] + trans, ground, 0.5, colours, stripes))
        # The same generator state every frame: the same background, lighting and sensor noise.
        image, _ = render_scene(np.random.default_rng(render_seed), camera, people, [], bodies)
        detections = []
        for k, person in enumerate(people):
            if person.occlusion > miss_occlusion or person.visible.sum() < 4:
                continue
            keypoints, _ = detector_pose(noise_rng, person, COCO_IN_SMPL30, COCO17, image_size)
            detections.append((k, keypoints))
        clip.frames.append(image)
        clip.people.append(people)
        clip.keypoints.append(detections)
    return clip


def coco_results(clip):
    """The clip's detections as a COCO results list (image_id and file_name = frame index, as main.demo matches
    video frames)."""
    return [{"image_id": index, "file_name": f"{index:06d}.jpg", "category_id": 1, "score": 1.0,
             "keypoints": np.round(keypoints, 3).reshape(-1).tolist()}
            for index, detections in enumerate(clip.keypoints) for _, keypoints in detections]


def write_clip(clip, out_dir, name="clip"):
    """OUT_DIR/<name>.mp4 (H.264) and OUT_DIR/<name>_keypoints.json; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    video, keypoints = out_dir / f"{name}.mp4", out_dir / f"{name}_keypoints.json"
    with H264Writer(video, clip.fps, crf=12) as writer:
        for frame in clip.frames:
            writer.write(frame)
    keypoints.write_text(json.dumps(coco_results(clip)))
    return video, keypoints


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--fps", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--body-models", help="mannequin folder (default: write one to OUT_DIR/body_models)")
    args = parser.parse_args(argv)
    body_models = Path(args.body_models) if args.body_models else Path(args.out_dir) / "body_models"
    if not args.body_models:
        write_mannequin(body_models)
    clip = make_clip(load_bodies(body_models), args.frames, args.fps, args.seed)
    for path in write_clip(clip, args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
