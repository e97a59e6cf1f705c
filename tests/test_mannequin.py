"""The mannequin body model: SMPL file layout, human proportions, joints, face landmarks, shape directions, and
limbs that stay attached when posed through the same SMPL loader and layer as the real files."""
import numpy as np
import pytest
import torch

from common.body.body_model import SMPLLayer, load_regressor, load_smpl, load_smpl_pickle
from common.body.joint_sets import H36M17, SMPL30, SMPL30_FACE_VERTICES, SMPL_PARENTS
from embedded.mannequin import REST_JOINTS, SHAPE_DIRECTIONS, build_mannequin, write_mannequin

J = {name: i for i, name in enumerate(SMPL30)}


@pytest.fixture(scope="module")
def model():
    return build_mannequin()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("body_models")
    return folder, write_mannequin(folder)


def _edges(faces):
    """Unique undirected edges (E, 2) of a triangle list."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(edges, axis=1), axis=0)


def _random_poses(n, max_degrees, seed):
    """(n, 72) axis-angle poses: every joint (root included) turned about a random axis by a random angle
    within +-max_degrees."""
    rng = np.random.default_rng(seed)
    axis = rng.standard_normal((n, 24, 3))
    axis /= np.linalg.norm(axis, axis=2, keepdims=True)
    angle = np.radians(rng.uniform(-max_degrees, max_degrees, (n, 24, 1)))
    return (axis * angle).reshape(n, 72)


def test_arrays_have_the_smpl_layout(model):
    assert model["v_template"].shape == (6890, 3)
    assert model["shapedirs"].shape == (6890, 3, 10)
    assert model["posedirs"].shape == (6890, 3, 207) and not model["posedirs"].any()
    assert model["J_regressor"].shape == (24, 6890)
    assert model["weights"].shape == (6890, 24)
    assert model["f"].shape == (13776, 3) and model["f"].min() == 0 and model["f"].max() == 6890 - 1
    assert model["J_regressor_extra"].shape == (9, 6890)
    assert model["J_regressor_h36m"].shape == (17, 6890)
    kintree = model["kintree_table"]
    assert kintree.shape == (2, 24)
    assert kintree[0, 0] == 4294967295
    assert list(kintree[0, 1:]) == list(SMPL_PARENTS[1:]) and list(kintree[1]) == list(range(24))
    for key in ("weights", "J_regressor", "J_regressor_extra", "J_regressor_h36m"):
        assert model[key].min() >= 0, key
        np.testing.assert_allclose(model[key].sum(axis=1), 1.0, atol=1e-9, err_msg=key)


def test_build_is_deterministic(model):
    again = build_mannequin()
    for key, value in model.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)


def test_mesh_is_one_closed_oriented_surface(model):
    """Like SMPL's mesh: every edge shared by exactly two faces traversing it in opposite directions, one
    connected piece, Euler characteristic 2 (a sphere), and outward normals (positive volume)."""
    faces, verts = model["f"], model["v_template"]
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    keys = directed[:, 0] * 6890 + directed[:, 1]
    assert len(np.unique(keys)) == len(keys)
    assert set(keys) == set(directed[:, 1] * 6890 + directed[:, 0])
    edges = _edges(faces)
    assert 6890 - len(edges) + len(faces) == 2
    labels = np.arange(6890)  # connected components by label propagation
    for _ in range(200):
        low = np.minimum(labels[edges[:, 0]], labels[edges[:, 1]])
        new = labels.copy()
        np.minimum.at(new, edges[:, 0], low)
        np.minimum.at(new, edges[:, 1], low)
        if np.array_equal(new, labels):
            break
        labels = new
    assert len(np.unique(labels)) == 1
    tri = verts[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert 0.04 < volume < 0.1  # m^3; an adult's body volume is ~0.06-0.07 m^3 (the parts overlap)


def test_human_rest_proportions(model):
    verts, joints = model["v_template"], model["J_regressor"] @ model["v_template"]
    height = verts[:, 1].max() - verts[:, 1].min()
    assert 1.6 < height < 1.8
    assert abs(verts[:, 1].min() + 1.17) < 0.04  # soles, as in SMPL's template
    np.testing.assert_allclose(joints[J["Pelvis"]], [0.0, -0.22, 0.03], atol=0.02)
    # T-pose: arms horizontal along +-x, fingertips about 0.85 m from the body's axis.
    assert 0.8 < verts[:, 0].max() < 0.9 and 0.8 < -verts[:, 0].min() < 0.9
    for lr, side in (("L_", 1), ("R_", -1)):
        assert abs(joints[J[lr + "Wrist"], 1] - joints[J[lr + "Shoulder"], 1]) < 0.05
        # Left joints at positive x (SMPL's convention), mirrored on the right.
        for name in ("Hip", "Knee", "Ankle", "Toe", "Thorax", "Shoulder", "Elbow", "Wrist", "Hand"):
            assert side * joints[J[lr + name], 0] > 0.03, lr + name
    np.testing.assert_allclose(joints[J["L_Knee"]] * [-1, 1, 1], joints[J["R_Knee"]], atol=1e-9)
    # Up the body: ankle < knee < hip < spine < neck < head.
    order = ["L_Ankle", "L_Knee", "L_Hip", "Pelvis", "Torso", "Spine", "Chest", "Neck", "Head"]
    assert np.all(np.diff(joints[[J[n] for n in order], 1]) > 0)
    # Bone lengths of an adult (metres).
    bone = lambda a, b: np.linalg.norm(joints[J[a]] - joints[J[b]])  # noqa: E731
    assert 0.35 < bone("L_Hip", "L_Knee") < 0.45 and 0.35 < bone("L_Knee", "L_Ankle") < 0.45
    assert 0.22 < bone("L_Shoulder", "L_Elbow") < 0.30 and 0.2 < bone("L_Elbow", "L_Wrist") < 0.28


def test_joint_regressor_reproduces_the_designed_joints(model):
    np.testing.assert_allclose(model["J_regressor"] @ model["v_template"], REST_JOINTS, atol=1e-8)
    np.testing.assert_allclose(model["J"], REST_JOINTS, atol=1e-8)


def test_limb_joints_sit_on_the_limb_axis(model):
    """Independent of the regressor: the cross-section of the mesh through a knee or elbow, perpendicular to the
    bone, is centred on the joint."""
    verts, joints = model["v_template"], REST_JOINTS
    for joint, child in (("L_Knee", "L_Ankle"), ("R_Knee", "R_Ankle"), ("L_Elbow", "L_Wrist"),
                         ("R_Elbow", "R_Wrist")):
        centre = joints[J[joint]]
        axis = joints[J[child]] - centre
        axis /= np.linalg.norm(axis)
        offset = verts - centre
        along = offset @ axis
        across = np.linalg.norm(offset - along[:, None] * axis, axis=1)
        section = (np.abs(along) < 0.012) & (across < 0.09)
        assert section.sum() >= 8, joint
        centroid = verts[section].mean(0)
        np.testing.assert_allclose(centroid - (centroid - centre) @ axis * axis, centre, atol=0.006,
                                   err_msg=joint)
        assert across[section].min() > 0.015, joint  # the joint is inside the limb, not on its surface


def test_face_landmark_vertices(model):
    verts, joints = model["v_template"], REST_JOINTS
    nose, l_eye, r_eye, l_ear, r_ear = verts[list(SMPL30_FACE_VERTICES)]
    head = joints[J["Head"]]
    for point in (nose, l_eye, r_eye, l_ear, r_ear):
        assert joints[J["Neck"], 1] < point[1] < verts[:, 1].max() - 0.05
        assert np.linalg.norm(point - head) < 0.15
    # The nose tip is the front-most point of the head, on the mid-plane.
    head_region = verts[:, 1] > joints[J["Neck"], 1] + 0.03
    assert abs(nose[0]) < 0.005 and nose[2] > verts[head_region, 2].max() - 0.005
    # Eyes above the nose, left eye at positive x; ears at the sides, behind the eyes.
    assert l_eye[1] > nose[1] and r_eye[1] > nose[1]
    assert 0.015 < l_eye[0] < 0.05 and -0.05 < r_eye[0] < -0.015
    assert l_eye[2] > l_ear[2] + 0.05 and r_eye[2] > r_ear[2] + 0.05
    assert l_ear[0] > 0.06 and r_ear[0] < -0.06
    np.testing.assert_allclose(l_eye * [-1, 1, 1], r_eye, atol=1e-9)


def test_extra_and_h36m_regressors(model):
    verts, joints = model["v_template"], REST_JOINTS
    head_top = model["J_regressor_extra"][3] @ verts
    assert abs(head_top[0]) < 1e-6 and verts[:, 1].max() - 0.015 < head_top[1] <= verts[:, 1].max()
    h36m = dict(zip(H36M17, model["J_regressor_h36m"] @ verts))
    for name in ("Pelvis", "L_Hip", "R_Knee", "L_Ankle", "Neck", "R_Shoulder", "L_Elbow", "R_Wrist"):
        np.testing.assert_allclose(h36m[name], joints[J[name]], atol=1e-8, err_msg=name)
    assert h36m["Pelvis"][1] < h36m["Torso"][1] < h36m["Neck"][1]
    assert np.linalg.norm(h36m["Nose"] - verts[SMPL30_FACE_VERTICES[0]]) < 0.01
    np.testing.assert_allclose(h36m["Head_top"], head_top, atol=1e-9)


def test_shape_directions_have_their_meaning(model):
    verts, shapedirs, reg = model["v_template"], model["shapedirs"], model["J_regressor"]

    def shaped(k, value):
        betas = np.zeros(10)
        betas[k] = value
        v = verts + shapedirs @ betas
        return v, reg @ v

    size = np.linalg.norm(shapedirs, axis=1).max(axis=0)  # largest displacement per unit beta
    assert np.all((size > 0.01) & (size < 0.05)), size
    height = lambda v: v[:, 1].max() - v[:, 1].min()  # noqa: E731
    dist = lambda j, a, b: np.linalg.norm(j[J[a]] - j[J[b]])  # noqa: E731
    waist = np.abs(verts[:, 1] + 0.12) < 0.02  # a band of vertices around the waist

    k = SHAPE_DIRECTIONS.index
    v, _ = shaped(k("height"), 1.0)
    assert 0.03 < height(v) - height(verts) < 0.07
    v, _ = shaped(k("girth"), 1.0)
    assert np.ptp(v[waist, 0]) > np.ptp(verts[waist, 0]) + 0.01 and abs(height(v) - height(verts)) < 0.01
    _, j = shaped(k("leg_length"), 1.0)
    assert dist(j, "L_Hip", "L_Ankle") > dist(REST_JOINTS, "L_Hip", "L_Ankle") + 0.02
    _, j = shaped(k("arm_length"), 1.0)
    assert dist(j, "L_Shoulder", "L_Wrist") > dist(REST_JOINTS, "L_Shoulder", "L_Wrist") + 0.02
    _, j = shaped(k("shoulder_width"), 1.0)
    assert dist(j, "L_Shoulder", "R_Shoulder") > dist(REST_JOINTS, "L_Shoulder", "R_Shoulder") + 0.02
    _, j = shaped(k("hip_width"), 1.0)
    assert dist(j, "L_Hip", "R_Hip") > dist(REST_JOINTS, "L_Hip", "R_Hip") + 0.015
    _, j = shaped(k("torso_length"), 1.0)
    assert dist(j, "Pelvis", "Neck") > dist(REST_JOINTS, "Pelvis", "Neck") + 0.02
    v, _ = shaped(k("head_size"), 1.0)
    top = REST_JOINTS[J["Neck"], 1] + 0.03
    assert np.ptp(v[verts[:, 1] > top, 2]) > np.ptp(verts[verts[:, 1] > top, 2]) + 0.005
    for name, band in (("chest_depth", 0.10), ("belly", -0.09)):
        v, _ = shaped(k(name), 1.0)
        ring = (np.abs(verts[:, 1] - band) < 0.02) & (np.abs(verts[:, 0]) < 0.05)
        assert v[ring, 2].max() > verts[ring, 2].max() + 0.008, name
    # Negative betas go the other way.
    v, _ = shaped(k("height"), -1.0)
    assert height(v) < height(verts) - 0.03


def test_files_load_through_the_smpl_loader(files, model):
    folder, paths = files
    assert paths["neutral"] == folder / "smpl" / "SMPL_NEUTRAL.pkl"
    heights = {}
    for gender in ("neutral", "male", "female"):
        arrays = load_smpl_pickle(paths[gender])
        heights[gender] = np.ptp(arrays["v_template"][:, 1])
        np.testing.assert_allclose(arrays["J_regressor"] @ arrays["v_template"], arrays["J"], atol=1e-8)
    np.testing.assert_array_equal(load_smpl_pickle(paths["neutral"])["v_template"], model["v_template"])
    assert heights["female"] < heights["neutral"] < heights["male"]
    extra = load_regressor(folder / "J_regressor_extra.npy", (9, 6890), "J_regressor_extra", "here")
    h36m = load_regressor(folder / "J_regressor_h36m_correct.npy", (17, 6890), "J_regressor_h36m", "here")
    np.testing.assert_allclose(extra, model["J_regressor_extra"], atol=1e-7)
    np.testing.assert_allclose(h36m, model["J_regressor_h36m"], atol=1e-7)
    smpl = load_smpl(folder / "smpl", "neutral")
    with torch.no_grad():
        rest = smpl(torch.zeros(1, 72), torch.zeros(1, 10))[0].numpy()
    np.testing.assert_allclose(rest, model["v_template"], atol=1e-5)


def test_posed_limbs_stay_attached(files, model):
    """Under 20 random poses (every joint turned by up to 60 degrees) edge lengths stretch smoothly: a part
    coming off its parent would tear the mesh (its junction edges would grow many times over)."""
    folder, _ = files
    smpl = load_smpl(folder / "smpl", "neutral").double()
    poses = torch.as_tensor(_random_poses(20, 60, seed=0))
    with torch.no_grad():
        posed = smpl(poses, torch.zeros(20, 10, dtype=torch.float64)).numpy()
    edges = _edges(model["f"])
    rest = np.linalg.norm(model["v_template"][edges[:, 0]] - model["v_template"][edges[:, 1]], axis=1)
    length = np.linalg.norm(posed[:, edges[:, 0]] - posed[:, edges[:, 1]], axis=2)
    ratio = length / rest
    assert ratio.max() < 3.0
    assert np.percentile(ratio, 99) < 1.5
    assert (length - rest).max() < 0.05  # metres


def test_a_joint_moves_only_its_subtree(model):
    smpl = SMPLLayer({k: model[k] for k in model}).double()
    pose = torch.zeros(1, 72, dtype=torch.float64)
    pose[0, 3 * J["L_Elbow"] + 1] = -np.pi / 2  # bend the left elbow
    with torch.no_grad():
        posed = smpl(pose, torch.zeros(1, 10, dtype=torch.float64))[0].numpy()
    verts = model["v_template"]
    moved = np.linalg.norm(posed - verts, axis=1) > 1e-6  # smplx turns a zero pose by ~1e-8 rad
    elbow_x = REST_JOINTS[J["L_Elbow"], 0]
    assert not moved[verts[:, 0] < elbow_x - 0.06].any()  # everything well before the elbow stays
    assert moved[verts[:, 0] > REST_JOINTS[J["L_Wrist"], 0]].all()  # the whole hand moves
    hand = verts[:, 0] > REST_JOINTS[J["L_Wrist"], 0]
    # Rigidly with the forearm: the hand keeps its distance to the elbow.
    elbow = REST_JOINTS[J["L_Elbow"]]
    np.testing.assert_allclose(np.linalg.norm(posed[hand] - elbow, axis=1),
                               np.linalg.norm(verts[hand] - elbow, axis=1), atol=1e-6)
