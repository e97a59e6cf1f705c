"""Linking people across video frames: one id per person, kept through short occlusions.

Each frame, the live tracks are matched to the frame's people by the Hungarian algorithm
(scipy.optimize.linear_sum_assignment) on a cost that adds two distances between a track's predicted position and a
person: 1 - IoU of their boxes, and the mean distance of the 2D joints both have, in units of the track's box size
(sqrt(w h)). A track's prediction moves its last box and joints by its velocity (box-centre pixels per frame,
averaged over its recent steps), so a person walking behind something for a few frames is found again where it
comes out. A pair is matched only when its cost is at most `max_cost`; unmatched people start new tracks (new ids,
never reused); a track unmatched for more than `max_missing` frames ends.
"""
import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment

DEFAULT_MAX_MISSING = 10  # frames a track survives unseen (a third of a second at 30 fps)
DEFAULT_MAX_COST = 1.2
DEFAULT_POSE_WEIGHT = 1.0
VELOCITY_MOMENTUM = 0.5  # weight of the previous velocity in its running average


def box_iou(a, b):
    """IoU of boxes a (N, 4) and b (M, 4), xywh -> (N, M)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def pose_distance(joints_a, joints_b, scale):
    """Mean distance between the joints (J, 3: x, y, confidence) valid (confidence > 0) in both, divided by
    `scale` (pixels); inf when they share no valid joint."""
    both = (joints_a[:, 2] > 0) & (joints_b[:, 2] > 0)
    if not both.any():
        return np.inf
    return float(np.linalg.norm(joints_a[both, :2] - joints_b[both, :2], axis=1).mean() / max(scale, 1e-6))


@dataclasses.dataclass
class Track:
    """A tracked person: id; box (4,) xywh and joints (J, 3) where it was last seen, at frame `last_frame`;
    velocity (2,) pixels per frame."""
    id: int
    box: np.ndarray
    joints: np.ndarray
    last_frame: int
    velocity: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))

    def predicted(self, frame):
        """(box, joints) moved by the velocity to `frame`."""
        shift = self.velocity * (frame - self.last_frame)
        box = self.box.copy()
        box[:2] += shift
        joints = self.joints.copy()
        joints[:, :2] += shift
        return box, joints


class Tracker:
    """Online tracker: call `update` once per frame, in frame order. Ids count up from 0."""

    def __init__(self, max_missing=DEFAULT_MAX_MISSING, max_cost=DEFAULT_MAX_COST, pose_weight=DEFAULT_POSE_WEIGHT):
        self.max_missing, self.max_cost, self.pose_weight = max_missing, max_cost, pose_weight
        self.tracks = []
        self.next_id = 0

    def cost_matrix(self, frame, boxes, joints):
        """(tracks, people) matching costs; see the module docstring."""
        cost = np.zeros((len(self.tracks), len(boxes)))
        for i, track in enumerate(self.tracks):
            box, track_joints = track.predicted(frame)
            cost[i] = 1 - box_iou(box, boxes)[0]
            scale = np.sqrt(max(box[2] * box[3], 1.0))
            cost[i] += [self.pose_weight * min(pose_distance(track_joints, j, scale), 10.0) for j in joints]
        return cost

    def update(self, frame, boxes, joints):
        """Match the people of `frame` (an increasing integer; gaps count as frames without people): boxes (N, 4)
        xywh pixels, joints (N, J, 3) pixels + confidence. Returns their ids (N,) int."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        joints = np.asarray(joints, np.float64)
        if len(joints) != len(boxes):
            raise ValueError(f"tracker: {len(boxes)} boxes but {len(joints)} poses")
        ids = np.full(len(boxes), -1, dtype=np.int64)
        if self.tracks and len(boxes):
            cost = self.cost_matrix(frame, boxes, joints)
            for t, p in zip(*linear_sum_assignment(cost)):
                if cost[t, p] <= self.max_cost:
                    self._follow(self.tracks[t], frame, boxes[p], joints[p])
                    ids[p] = self.tracks[t].id
        for p in np.flatnonzero(ids < 0):
            self.tracks.append(Track(self.next_id, boxes[p].copy(), joints[p].copy(), frame))
            ids[p] = self.next_id
            self.next_id += 1
        self.tracks = [t for t in self.tracks if frame - t.last_frame <= self.max_missing]
        return ids

    @staticmethod
    def _follow(track, frame, box, joints):
        steps = frame - track.last_frame
        centre_old = track.box[:2] + track.box[2:] / 2
        centre_new = box[:2] + box[2:] / 2
        step_velocity = (centre_new - centre_old) / max(steps, 1)
        track.velocity = VELOCITY_MOMENTUM * track.velocity + (1 - VELOCITY_MOMENTUM) * step_velocity
        track.box, track.joints, track.last_frame = box.copy(), joints.copy(), frame
