"""2D people for the demo: the user's keypoint files (COCO or OpenPose JSON), or torchvision's Keypoint R-CNN.

Whatever the source, a person's 2D pose enters the model exactly as the 3DPW test loader (data/pw3d.py) feeds
it: OpenPose COCO-18 + Pelvis, or COCO-17 + Pelvis + Neck (the HigherHRNet path), mapped by name into SMPL-30
(Pelvis = mean of the hips, Neck = mean of the shoulders, confidence = the product); joints with confidence
<= 0.05 are invalid; the crop box is the valid joints' tight box x1.2, made square and enlarged x1.1
(`person_from_keypoints`).

Keypoint files (`read_keypoint_file`):
* COCO person keypoints: {"images": [{"id", "file_name"}], "annotations": [{"image_id", "keypoints": 17 x 3
  flat (x, y, visibility or score), optional "score", "category_id" (1 = person), "iscrowd"}]}, or a plain list
  of annotations (detector-results style) carrying "image_id" and/or "file_name". Image pixels. A 3DPW-style
  annotation file (data/pw3d.py: annotations with "openpose_result", 18 x 3 OpenPose) is read the same way.
* OpenPose: one JSON per image named `<image stem>_keypoints.json` (a folder of them, or one file for a single
  image): {"people": [{"pose_keypoints_2d": x, y, confidence flat}]} in the BODY_25 (75 numbers) or COCO-18
  (54 numbers) layout.
"""
import json
import re
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.body.joint_sets import (
    COCO17,
    COCO17_PELVIS_NECK,
    OPENPOSE18,
    OPENPOSE18_PELVIS,
    SMPL30,
    add_pelvis_neck,
    map_joints,
)
from common.errors import InputError, UserError
from data.preprocessing import pose_crop_box
from data.pw3d import MIN_JOINT_CONFIDENCE

# OpenPose's BODY_25 output order, in this repository's joint names. Its first 19 entries are the COCO-18
# joints (common.body.joint_sets.OPENPOSE18) in the same order except for MidHip inserted at 8, so it maps by name.
OPENPOSE_BODY25 = ("Nose", "Neck", "R_Shoulder", "R_Elbow", "R_Wrist", "L_Shoulder", "L_Elbow", "L_Wrist",
                   "MidHip", "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "R_Eye", "L_Eye", "R_Ear",
                   "L_Ear", "L_BigToe", "L_SmallToe", "L_Heel", "R_BigToe", "R_SmallToe", "R_Heel")
# Input layouts: joint names in file order.
LAYOUTS = {"coco17": COCO17, "openpose18": OPENPOSE18, "body25": OPENPOSE_BODY25}

KEYPOINT_FORMATS_HELP = (
    "a COCO person-keypoints JSON ({'images': [{'id', 'file_name'}], 'annotations': [{'image_id', 'keypoints': "
    "17 x 3 flat x, y, visibility/score}]}, or a plain list of annotations with 'image_id' or 'file_name'; "
    "file names or ids must match the input image names, or the frame indices of a video), or OpenPose output "
    "(a folder of '<image stem>_keypoints.json' files, BODY_25 or COCO-18 layout, e.g. from "
    "`openpose --write_json DIR`), or the results of any COCO keypoint detector in the COCO format")

KEYPOINT_RCNN_DEFAULT_THRESHOLD = 0.7


class KeypointFileError(InputError):
    """A keypoint file that cannot be read; the message names the file and the expected format."""


class DetectorUnavailableError(UserError, RuntimeError):
    """The Keypoint R-CNN weights could not be loaded (usually: no internet); the message says what to do."""


@dataclass
class Person2D:
    """One person's 2D input. joints (30, 3): SMPL-30 order, image pixels + confidence (zeros where the source
    has no such joint); valid (30,) float32 {0, 1} (confidence > 0.05); bbox (4,) the crop box, xywh image pixels;
    score: the detection score when the source has one, else None."""
    joints: np.ndarray
    valid: np.ndarray
    bbox: np.ndarray
    score: float | None = None


def to_smpl30(keypoints, layout):
    """(K, 3) keypoints (x, y, confidence) in `layout` ('coco17', 'openpose18', 'body25') -> (30, 3) SMPL-30,
    with the joints the 3DPW loader adds: Pelvis for OpenPose (BODY_25's own MidHip is not used, as 3DPW's
    OpenPose has none), Pelvis and Neck for COCO."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown keypoint layout {layout!r}; expected one of {sorted(LAYOUTS)}")
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if keypoints.shape != (len(LAYOUTS[layout]), 3):
        raise ValueError(f"{layout} keypoints must be ({len(LAYOUTS[layout])}, 3), got {keypoints.shape}")
    if layout == "body25":
        keypoints, layout = map_joints(keypoints, OPENPOSE_BODY25, OPENPOSE18), "openpose18"
    with_added = OPENPOSE18_PELVIS if layout == "openpose18" else COCO17_PELVIS_NECK
    return map_joints(add_pelvis_neck(keypoints, with_added), with_added, SMPL30)


def person_from_keypoints(keypoints, layout, img_width, img_height, score=None):
    """A Person2D from one detection, with the 3DPW test protocol's crop box; None when the pose has no usable
    box (no valid joint, or all valid joints at one point)."""
    joints = to_smpl30(keypoints, layout)
    valid = (joints[:, 2] > MIN_JOINT_CONFIDENCE).astype(np.float32)
    if not valid.any():
        return None
    bbox = pose_crop_box(joints, valid, img_width, img_height)
    if bbox is None or bbox[2] <= 0 or bbox[3] <= 0:
        return None
    return Person2D(joints=joints, valid=valid, bbox=bbox, score=None if score is None else float(score))


# ----------------------------------------------------------------------------------------------------------------------
# Keypoint files


@dataclass
class Detection:
    """A pose as read from a file: keypoints (K, 3) image pixels + confidence in `layout`."""
    keypoints: np.ndarray
    layout: str
    score: float | None = None


_TRAILING_NUMBER = re.compile(r"(?:^|_)(\d+)$")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def image_stem(name):
    """A file name without its directory and image extension ('a/b/0012.jpg' -> '0012'; 'clip_0012' unchanged)."""
    name = Path(name).name
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name


class KeypointFile:
    """Detections per image from a keypoint file or folder: `entries` {image name: [Detection, ...]}.

    `lookup(frame_name, video_index)` finds a frame's detections by, in order: the exact file name; the name
    without extension (so 'a.png' finds 'a.jpg'); for video frames the frame index, matched against names that are
    a number or end in '_<number>' ('12', '000012.jpg', 'clip_000000000012' as OpenPose names video frames); for
    images, a number name ('000012.jpg') against entries keyed by a bare number (a COCO image_id)."""

    def __init__(self, entries, source):
        self.entries, self.source = entries, str(source)
        self._by_name, self._by_stem, self._by_number, self._by_bare_number = {}, {}, {}, {}
        for key, detections in entries.items():
            stem = image_stem(key)
            self._by_name.setdefault(Path(key).name, []).extend(detections)
            self._by_stem.setdefault(stem, []).extend(detections)
            match = _TRAILING_NUMBER.search(stem)
            if match:
                self._by_number.setdefault(int(match.group(1)), []).extend(detections)
                if stem.isdigit():
                    self._by_bare_number.setdefault(int(stem), []).extend(detections)

    def __len__(self):
        return len(self.entries)

    def lookup(self, frame_name, video_index=None):
        """Detections of one input frame (a list, empty when the file has none for it), or None when no entry
        matches the frame."""
        name = Path(frame_name).name
        for table, key in ((self._by_name, name), (self._by_stem, image_stem(name))):
            if key in table:
                return table[key]
        if video_index is not None:
            return self._by_number.get(int(video_index))
        stem = image_stem(name)
        return self._by_bare_number.get(int(stem)) if stem.isdigit() else None


def _detections_from_openpose(content, path):
    if not isinstance(content.get("people"), list):
        raise KeypointFileError(f"{path}: an OpenPose file needs a 'people' list")
    detections = []
    for k, person in enumerate(content["people"]):
        flat = np.asarray(person.get("pose_keypoints_2d", []), dtype=np.float32).reshape(-1)
        layouts = {3 * len(OPENPOSE_BODY25): "body25", 3 * len(OPENPOSE18): "openpose18"}
        if flat.size not in layouts:
            raise KeypointFileError(f"{path}: people[{k}].pose_keypoints_2d has {flat.size} numbers; expected 75 "
                                    f"(BODY_25) or 54 (COCO-18) as x, y, confidence triples")
        detections.append(Detection(flat.reshape(-1, 3), layouts[flat.size]))
    return detections


def _coco_entries(annotations, images, path):
    entries = {str(name): [] for name in images.values()}  # a listed image without annotations has no people
    for k, ann in enumerate(annotations):
        if not isinstance(ann, dict) or not ("keypoints" in ann or "openpose_result" in ann):
            raise KeypointFileError(f"{path}: annotation {k} has no 'keypoints' (expected a COCO person annotation "
                                    f"with 'keypoints': 17 x 3 flat)")
        if ann.get("category_id", 1) != 1 or ann.get("iscrowd", 0):
            continue  # not a person, or a crowd region
        if "keypoints" in ann:
            keypoints, layout = np.asarray(ann["keypoints"], dtype=np.float32).reshape(-1), "coco17"
        else:  # a 3DPW-style annotation file (data/pw3d.py): its OpenPose COCO-18 result
            keypoints, layout = np.asarray(ann["openpose_result"], dtype=np.float32).reshape(-1), "openpose18"
        if keypoints.size != 3 * len(LAYOUTS[layout]):
            raise KeypointFileError(f"{path}: annotation {k} has {keypoints.size} keypoint numbers; expected "
                                    f"{3 * len(LAYOUTS[layout])} ({len(LAYOUTS[layout])} joints as x, y, "
                                    f"visibility/score)")
        image_id = ann.get("image_id")
        if image_id in images:
            key = images[image_id]
        elif "file_name" in ann:
            key = ann["file_name"]
        elif image_id is not None:
            key = str(image_id)
        else:
            raise KeypointFileError(f"{path}: annotation {k} has neither 'image_id' nor 'file_name'")
        entries.setdefault(str(key), []).append(Detection(keypoints.reshape(-1, 3), layout, ann.get("score")))
    return entries


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise KeypointFileError(f"{path}: not a readable JSON keypoint file ({err}); expected "
                                f"{KEYPOINT_FORMATS_HELP}") from err


def openpose_key(path):
    """The image name an OpenPose JSON belongs to: `<stem>_keypoints.json` -> `<stem>`."""
    return Path(path).name.removesuffix(".json").removesuffix("_keypoints")


def read_keypoint_file(path):
    """Read a COCO keypoints JSON, an OpenPose JSON, or a folder of OpenPose JSONs into a KeypointFile."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*_keypoints.json"))
        if not files:
            raise KeypointFileError(f"{path}: no '*_keypoints.json' files (OpenPose per-image output) in this "
                                    f"folder; expected {KEYPOINT_FORMATS_HELP}")
        entries = {}
        for file in files:
            content = _read_json(file)
            if not isinstance(content, dict):
                raise KeypointFileError(f"{file}: expected an OpenPose JSON object with 'people'")
            entries[openpose_key(file)] = _detections_from_openpose(content, file)
        return KeypointFile(entries, path)
    if not path.is_file():
        raise KeypointFileError(f"keypoint file not found: {path}; expected {KEYPOINT_FORMATS_HELP}")
    content = _read_json(path)
    if isinstance(content, dict) and "people" in content:
        return KeypointFile({openpose_key(path): _detections_from_openpose(content, path)}, path)
    if isinstance(content, dict) and isinstance(content.get("annotations"), list):
        images = {}
        for img in content.get("images", []):
            if "id" not in img or "file_name" not in img:
                raise KeypointFileError(f"{path}: every entry of 'images' needs 'id' and 'file_name'")
            images[img["id"]] = img["file_name"]
        return KeypointFile(_coco_entries(content["annotations"], images, path), path)
    if isinstance(content, list):
        return KeypointFile(_coco_entries(content, {}, path), path)
    raise KeypointFileError(f"{path}: unrecognised keypoint file; expected {KEYPOINT_FORMATS_HELP}")


# ----------------------------------------------------------------------------------------------------------------------
# Detector


def _offline_message(error):
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights

    url = KeypointRCNN_ResNet50_FPN_Weights.DEFAULT.url
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return (
        f"no keypoints file was given, and the person/keypoint detector could not be loaded: torchvision's "
        f"Keypoint R-CNN downloads its weights on first use ({url}) and that failed "
        f"({type(error).__name__}: {error}).\n"
        f"Either\n"
        f"  1. give the 2D poses with --keypoints PATH: {KEYPOINT_FORMATS_HELP}; or\n"
        f"  2. put the detector weights into the torch hub cache: on a machine with internet run\n"
        f"       python -c \"from torchvision.models.detection import keypointrcnn_resnet50_fpn as k, "
        f"KeypointRCNN_ResNet50_FPN_Weights as W; k(weights=W.DEFAULT)\"\n"
        f"     and copy the downloaded {Path(url).name} into {cache} (the cache is $TORCH_HOME/hub/checkpoints, "
        f"TORCH_HOME defaulting to ~/.cache/torch).")


def load_keypoint_rcnn(device):
    """torchvision's COCO Keypoint R-CNN (ResNet-50 FPN) in eval mode on `device`. Raises
    DetectorUnavailableError with instructions when its weights cannot be downloaded or read."""
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights, keypointrcnn_resnet50_fpn

    try:
        model = keypointrcnn_resnet50_fpn(weights=KeypointRCNN_ResNet50_FPN_Weights.DEFAULT)
    except (urllib.error.URLError, OSError, RuntimeError) as error:  # no network, bad cache file, hash mismatch
        raise DetectorUnavailableError(_offline_message(error)) from error
    return model.eval().to(device)


class KeypointRCNNDetector:
    """People and their COCO-17 keypoints in an image with torchvision's Keypoint R-CNN.

    Calling it with an (H, W, 3) uint8 RGB image returns a list of Detection (keypoints (17, 3): x, y image
    pixels and confidence = sigmoid(keypoint score), layout 'coco17', score = the person's box score), for the
    people whose box score is at least `score_threshold`, most confident first."""

    def __init__(self, device="cpu", score_threshold=KEYPOINT_RCNN_DEFAULT_THRESHOLD, model=None):
        self.device = torch.device(device)
        self.score_threshold = score_threshold
        self.model = model if model is not None else load_keypoint_rcnn(self.device)

    @torch.no_grad()
    def __call__(self, image):
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255).to(self.device)
        out = self.model([tensor])[0]
        keep = (out["labels"] == 1) & (out["scores"] >= self.score_threshold)
        # Keypoint scores are heatmap logits; the sigmoid turns them into the 0-1 confidences the 0.05 rule expects.
        confidence = torch.sigmoid(out["keypoints_scores"][keep])
        keypoints = torch.cat([out["keypoints"][keep][..., :2], confidence[..., None]], dim=-1).cpu().numpy()
        scores = out["scores"][keep].cpu().numpy()
        order = np.argsort(-scores, kind="stable")
        return [Detection(keypoints[i], "coco17", float(scores[i])) for i in order]
