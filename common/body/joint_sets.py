"""Joint sets and their names: the one place that defines them (spec 5.1).

Every dataset's joints are mapped into the 30-joint SMPL set by *name*; the model's
15 decoder queries are a subset of it. Index lists below are derived from the names,
never typed twice.
"""
import numpy as np

# The model's 30 joints: rows of the J30 regressor (24 SMPL joints, 5 face vertices, head top).
SMPL30 = (
    "Pelvis", "L_Hip", "R_Hip", "Torso", "L_Knee", "R_Knee", "Spine", "L_Ankle", "R_Ankle", "Chest",
    "L_Toe", "R_Toe", "Neck", "L_Thorax", "R_Thorax", "Head", "L_Shoulder", "R_Shoulder", "L_Elbow",
    "R_Elbow", "L_Wrist", "R_Wrist", "L_Hand", "R_Hand", "Nose", "L_Eye", "R_Eye", "L_Ear", "R_Ear",
    "Head_top",
)
SMPL30_FLIP_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23),
                     (25, 26), (27, 28))
# SMPL's kinematic tree (parent of each of the 24 SMPL joints).
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
# SMPL joints whose rotations the pose loss leaves unsupervised (spec 5.3): the ankles, toes, wrists and hands,
# whose fitted rotations are unreliable.
UNSUPERVISED_SMPL_JOINTS = (7, 8, 10, 11, 20, 21, 22, 23)
# Mesh vertices that define joints 24..28 (Nose, L_Eye, R_Eye, L_Ear, R_Ear) of SMPL30.
SMPL30_FACE_VERTICES = (331, 2802, 6262, 3489, 3990)
# Row of the SPIN J_regressor_extra (9 x 6890) that regresses the head top (SMPL30 joint 29).
HEAD_TOP_EXTRA_ROW = 3

# The 15 joints the decoder regresses (its joint queries), in query order.
QUERY15 = ("Pelvis", "L_Hip", "R_Hip", "L_Knee", "R_Knee", "L_Ankle", "R_Ankle", "Neck", "Head_top",
           "L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow", "L_Wrist", "R_Wrist")

# Human3.6M's 17 joints (order of J_regressor_h36m_correct.npy and of the H36M annotations).
H36M17 = ("Pelvis", "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "Torso", "Neck", "Nose",
          "Head_top", "L_Shoulder", "L_Elbow", "L_Wrist", "R_Shoulder", "R_Elbow", "R_Wrist")
# The 14 H36M joints scored by the 3DPW protocol (spec 6): all but Pelvis, Torso and Nose.
H36M_EVAL14 = ("R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "Neck", "Head_top",
               "L_Shoulder", "L_Elbow", "L_Wrist", "R_Shoulder", "R_Elbow", "R_Wrist")

MUCO21 = ("Head_top", "Thorax", "R_Shoulder", "R_Elbow", "R_Wrist", "L_Shoulder", "L_Elbow", "L_Wrist",
          "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "Pelvis", "Spine", "Head", "R_Hand",
          "L_Hand", "R_Toe", "L_Toe")
COCO17 = ("Nose", "L_Eye", "R_Eye", "L_Ear", "R_Ear", "L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow",
          "L_Wrist", "R_Wrist", "L_Hip", "R_Hip", "L_Knee", "R_Knee", "L_Ankle", "R_Ankle")
COCO17_PELVIS = COCO17 + ("Pelvis",)
COCO17_PELVIS_NECK = COCO17 + ("Pelvis", "Neck")  # 3DPW HigherHRNet, 3DOH HRNet inputs
CROWDPOSE14 = ("L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow", "L_Wrist", "R_Wrist", "L_Hip", "R_Hip",
               "L_Knee", "R_Knee", "L_Ankle", "R_Ankle", "Head_top", "Neck")
CROWDPOSE14_PELVIS = CROWDPOSE14 + ("Pelvis",)
OPENPOSE18 = ("Nose", "Neck", "R_Shoulder", "R_Elbow", "R_Wrist", "L_Shoulder", "L_Elbow", "L_Wrist",
              "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "R_Eye", "L_Eye", "R_Ear", "L_Ear")
OPENPOSE18_PELVIS = OPENPOSE18 + ("Pelvis",)  # 3DPW's openpose_result + Pelvis


def indices(names, joint_set):
    """Positions of `names` in `joint_set` (a tuple of joint names)."""
    return [joint_set.index(n) for n in names]


SMPL30_QUERY15_IDX = indices(QUERY15, SMPL30)  # [0, 1, 2, 4, 5, 7, 8, 12, 29, 16, 17, 18, 19, 20, 21]
H36M_EVAL14_IDX = indices(H36M_EVAL14, H36M17)
H36M_ROOT_IDX = H36M17.index("Pelvis")


def flip_pairs(joint_set):
    """Left/right pairs of a joint set, derived from the names (L_x <-> R_x)."""
    pairs = []
    for i, name in enumerate(joint_set):
        if name.startswith("L_") and "R_" + name[2:] in joint_set:
            pairs.append((i, joint_set.index("R_" + name[2:])))
    return tuple(pairs)


def add_pelvis_neck(joints, joint_set):
    """Append Pelvis (mean of the hips) and/or Neck (mean of the shoulders) as the joint set
    `joint_set` expects (spec 5.1). joints: (J, 2 or 3) array whose last column, if present, is a
    confidence/validity; the added joint's confidence is the product of its two sources'.
    Returns the extended (len(joint_set), C) array."""
    out = [np.asarray(joints, dtype=np.float32)]
    have = list(joint_set[: len(joints)])
    for name, (a, b) in (("Pelvis", ("L_Hip", "R_Hip")), ("Neck", ("L_Shoulder", "R_Shoulder"))):
        if name in joint_set[len(joints):]:
            ja, jb = joints[have.index(a)], joints[have.index(b)]
            new = (np.asarray(ja, np.float32) + np.asarray(jb, np.float32)) / 2
            if new.shape[-1] == 3:
                new[2] = ja[2] * jb[2]
            out.append(new[None])
    result = np.concatenate(out, axis=0)
    if len(result) != len(joint_set):
        raise ValueError(f"expected {len(joint_set)} joints after adding Pelvis/Neck, got {len(result)}")
    return result


def map_joints(joints, src_set, dst_set=SMPL30):
    """Re-order `joints` (len(src_set), C) into `dst_set` by name. Joints of dst_set that src_set
    lacks are zero; joints of src_set that dst_set lacks are dropped. Returns (len(dst_set), C)."""
    joints = np.asarray(joints)
    out = np.zeros((len(dst_set),) + joints.shape[1:], dtype=joints.dtype)
    for i, name in enumerate(src_set):
        if name in dst_set:
            out[dst_set.index(name)] = joints[i]
    return out
