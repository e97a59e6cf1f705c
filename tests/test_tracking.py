"""Tracking people across frames: ids from box IoU and 2D-pose distance, kept through a short occlusion, new for
new people, and on a synthetic clip where one person walks behind another for three frames."""
import numpy as np
import pytest

from common.video.tracking import Tracker, box_iou
from data.keypoints_io import person_from_keypoints


def _person(x, y=50.0, size=40.0, n_joints=5):
    box = np.array([x, y, size, 2 * size])
    joints = np.stack([np.linspace(x + 5, x + size - 5, n_joints), np.linspace(y + 5, y + 2 * size - 5, n_joints),
                       np.ones(n_joints)], axis=1)
    return box, joints


def _frame(*xs):
    people = [_person(x) for x in xs]
    return np.array([b for b, _ in people]).reshape(-1, 4), np.array([j for _, j in people]).reshape(len(xs), 5, 3)


def test_box_iou():
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]])
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]])


def test_ids_follow_people_whatever_their_order_in_the_frame():
    tracker = Tracker()
    first = tracker.update(0, *_frame(10, 100, 200))
    assert list(first) == [0, 1, 2]
    second = tracker.update(1, *_frame(203, 13, 104))  # same people, listed in another order, moved a little
    assert list(second) == [2, 0, 1]


def test_a_person_missing_for_a_few_frames_keeps_its_id_and_a_newcomer_gets_a_new_one():
    tracker = Tracker(max_missing=4)
    for frame in range(5):  # two people walking right at 10 px per frame
        ids = tracker.update(frame, *_frame(10 + 10 * frame, 150 + 10 * frame))
    assert list(ids) == [0, 1]
    for frame in range(5, 8):  # the second one is hidden for 3 frames
        assert list(tracker.update(frame, *_frame(10 + 10 * frame))) == [0]
    # It comes out where its walk leads, 40 px (a box width: no overlap with its last box) further; a newcomer
    # appears too.
    assert list(tracker.update(8, *_frame(10 + 10 * 8, 150 + 10 * 8, 300))) == [0, 1, 2]


def test_a_track_unseen_too_long_ends():
    tracker = Tracker(max_missing=2)
    tracker.update(0, *_frame(10, 100))
    for frame in (1, 2, 3):
        tracker.update(frame, *_frame(10))
    assert list(tracker.update(4, *_frame(10, 100))) == [0, 2]


def test_pose_distance_separates_overlapping_boxes():
    """Two people whose boxes overlap almost fully (one behind the other) are told apart by their joints."""
    tracker = Tracker()
    box = np.array([[50.0, 50, 40, 80], [52.0, 50, 40, 80]])
    left = np.array([[55.0, 60, 1], [60, 100, 1], [58, 120, 1]])
    right = np.array([[85.0, 60, 1], [82, 100, 1], [88, 120, 1]])
    tracker.update(0, box, np.stack([left, right]))
    ids = tracker.update(1, box, np.stack([right + 1, left + 1]))  # boxes the same, poses swapped
    assert list(ids) == [1, 0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from embedded.bodies import load_bodies
    from embedded.clip import make_clip
    from embedded.mannequin import write_mannequin

    folder = tmp_path_factory.mktemp("clip") / "body_models"
    write_mannequin(folder)
    return make_clip(load_bodies(folder), num_frames=36, fps=12.0, seed=0)


def test_ids_are_stable_on_a_synthetic_clip_with_a_three_frame_occlusion(clip):
    height, width = clip.frames[0].shape[:2]
    tracker = Tracker()
    ids_of_walker = {}
    for index, detections in enumerate(clip.keypoints):
        people = [person_from_keypoints(k, "coco17", width, height) for _, k in detections]
        ids = tracker.update(index, [p.bbox for p in people], [p.joints for p in people])
        for (walker, _), person_id in zip(detections, ids):
            ids_of_walker.setdefault(walker, set()).add(int(person_id))
    # The clip really has a person undetected for 3 or more consecutive frames (hidden behind another).
    seen = np.array([[any(w == k for k, _ in d) for d in clip.keypoints] for w in range(3)])
    gaps = [np.diff(np.flatnonzero(row)).max() - 1 for row in seen]
    assert max(gaps) >= 3
    assert all(len(ids) == 1 for ids in ids_of_walker.values()), ids_of_walker
    assert len({next(iter(ids)) for ids in ids_of_walker.values()}) == 3
