"""Body model: safe SMPL pickle loading (no chumpy, no code execution), file lookup and errors, the SMPL layer
against an independent numpy SMPL, and the J30 regressor. Every test writes its own random SMPL-layout files."""
import importlib.util
import io
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch
from torch import nn

from common.body.body_model import (
    BodyModelFileError,
    SMPLLayer,
    UnsafePickleError,
    find_smpl_file,
    joint_regressor_30,
    load_regressor,
    load_smpl,
    load_smpl_pickle,
)

# SMPL kinematic tree (spec 1.5), typed here rather than imported so the reference is independent.
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
SMPL_URL = "https://smpl.is.tue.mpg.de"


def random_smpl_arrays(seed=0):
    """A random model in the SMPL file layout: metre-scale template, small blend shapes, a regressor averaging
    a few vertices per joint, convex skinning weights."""
    rng = np.random.default_rng(seed)
    j_regressor = np.zeros((24, 6890))
    for j in range(24):
        verts = rng.choice(6890, size=20, replace=False)
        j_regressor[j, verts] = rng.random(20) + 0.1
    j_regressor /= j_regressor.sum(1, keepdims=True)
    weights = rng.random((6890, 24)) ** 6
    weights /= weights.sum(1, keepdims=True)
    return {
        "v_template": rng.normal(0.0, 0.3, (6890, 3)),
        "shapedirs": rng.normal(0.0, 0.01, (6890, 3, 10)).astype(np.float32),
        "posedirs": rng.normal(0.0, 0.01, (6890, 3, 207)).astype(np.float32),
        "J_regressor": j_regressor,
        "weights": weights,
        # As in the SMPL files: row 0 = parents (root stored as uint32 -1), row 1 = joint ids.
        "kintree_table": np.array([[4294967295] + list(PARENTS[1:]), list(range(24))], dtype=np.int64),
        "f": rng.integers(0, 6890, (13776, 3)).astype(np.uint32),
    }


@pytest.fixture(scope="module")
def arrays():
    return random_smpl_arrays()


@pytest.fixture(scope="module")
def layer(arrays):
    return SMPLLayer(arrays)


def rodrigues(axis_angle):
    theta = np.linalg.norm(axis_angle)
    if theta < 1e-12:
        return np.eye(3)
    k = axis_angle / theta
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * cross @ cross


def smpl_reference(arrays, pose, betas, transl):
    """Plain numpy SMPL for one sample: pose (72,), betas (10,), transl (3,) -> vertices (6890, 3)."""
    v_shaped = arrays["v_template"] + arrays["shapedirs"][:, :, :10].astype(np.float64) @ betas
    joints = arrays["J_regressor"] @ v_shaped
    rotations = [rodrigues(pose[3 * j:3 * j + 3]) for j in range(24)]
    pose_feature = np.concatenate([(r - np.eye(3)).ravel() for r in rotations[1:]])
    v_posed = v_shaped + arrays["posedirs"].astype(np.float64) @ pose_feature
    world = []
    for j, parent in enumerate(PARENTS):
        local = np.eye(4)
        local[:3, :3] = rotations[j]
        local[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0)
        world.append(local if parent < 0 else world[parent] @ local)
    skinning = np.stack(world)
    skinning[:, :3, 3] -= np.einsum("jab,jb->ja", skinning[:, :3, :3], joints)
    per_vertex = np.einsum("vj,jab->vab", arrays["weights"], skinning)
    return np.einsum("vab,vb->va", per_vertex[:, :3, :3], v_posed) + per_vertex[:, :3, 3] + transl


def write_pickle(path, obj, protocol=pickle.HIGHEST_PROTOCOL):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Loading


def test_plain_numpy_pickle_loads(tmp_path, arrays):
    extra = {"bs_style": "lbs", "J": np.zeros((24, 3))}
    for protocol in (2, 5):
        path = write_pickle(tmp_path / f"SMPL_NEUTRAL_{protocol}.pkl", {**arrays, **extra}, protocol)
        loaded = load_smpl_pickle(path)
        assert loaded["bs_style"] == "lbs"
        for key, value in arrays.items():
            assert isinstance(loaded[key], np.ndarray)
            np.testing.assert_array_equal(loaded[key], value)


def test_layer_matches_numpy_smpl(arrays, layer):
    rng = np.random.default_rng(1)
    pose = rng.normal(0.0, 0.4, (3, 72))
    pose[0] = 0.0  # rest pose: the zero-angle case of Rodrigues
    betas = rng.normal(0.0, 1.0, (3, 10))
    transl = rng.normal(0.0, 2.0, (3, 3))
    with torch.no_grad():
        vertices = layer(torch.tensor(pose, dtype=torch.float32), torch.tensor(betas, dtype=torch.float32),
                         torch.tensor(transl, dtype=torch.float32))
        untranslated = layer(torch.tensor(pose, dtype=torch.float32), torch.tensor(betas, dtype=torch.float32))
    assert vertices.shape == (3, 6890, 3) and vertices.dtype == torch.float32
    for i in range(3):
        expected = smpl_reference(arrays, pose[i], betas[i], transl[i])
        np.testing.assert_allclose(vertices[i].numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(untranslated[i].numpy(), expected - transl[i], atol=1e-5)
    joints = layer.joints24(vertices)
    np.testing.assert_allclose(joints.numpy(), np.einsum("jv,bvc->bjc", arrays["J_regressor"], vertices.numpy()),
                               atol=1e-5)
    assert layer.faces.dtype == np.int64
    np.testing.assert_array_equal(layer.faces, arrays["f"])


def test_layer_runs_in_float32_under_autocast(layer):
    rng = np.random.default_rng(2)
    pose = torch.tensor(rng.normal(0.0, 0.4, (2, 72)), dtype=torch.bfloat16)
    betas = torch.tensor(rng.normal(0.0, 1.0, (2, 10)), dtype=torch.bfloat16)
    with torch.no_grad():
        expected = layer(pose.float(), betas.float())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            vertices = layer(pose, betas)
    assert vertices.dtype == torch.float32
    torch.testing.assert_close(vertices, expected, atol=1e-6, rtol=0)


def python2_style_pickle(obj, protocol):
    """Pickle like the SMPL site's Python 2 files: numpy arrays as numpy.core.multiarray._reconstruct + a state
    whose raw data is a (latin-1) string, the numpy.core module path, protocol 1 or 2."""

    class Py2StylePickler(pickle.Pickler):
        def reducer_override(self, value):
            if type(value) is np.ndarray:
                reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct
                state = (1, value.shape, value.dtype, False, value.tobytes().decode("latin1"))
                return reconstruct, (np.ndarray, (0,), "b"), state
            return NotImplemented

    buffer = io.BytesIO()
    Py2StylePickler(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


@pytest.mark.parametrize("protocol", [1, 2])
@pytest.mark.parametrize("sparse_module", ["scipy.sparse._csc", "scipy.sparse.csc"])
def test_chumpy_pickle_loads_without_chumpy(tmp_path, arrays, protocol, sparse_module):
    chumpy = types.ModuleType("chumpy")
    chumpy_ch = types.ModuleType("chumpy.ch")

    class Ch:
        """Pickles like chumpy.ch.Ch: its __dict__ with the value in 'x' plus bookkeeping entries."""

        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)
            self._dirty_vars = {"x"}
            self._itr = None
            self._depends_on_deps = {}
            self._make_dense = False
            self._make_sparse = False

        def __getstate__(self):
            return dict(self.__dict__)

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy_ch.Ch = chumpy.Ch = Ch
    chumpy.ch = chumpy_ch
    j_regressor_prior = arrays["J_regressor"][:, ::-1].copy()
    model = {
        "v_template": Ch(arrays["v_template"]), "shapedirs": Ch(arrays["shapedirs"]),
        "posedirs": Ch(arrays["posedirs"]), "weights": Ch(arrays["weights"]),
        "J_regressor": scipy.sparse.csc_matrix(arrays["J_regressor"]),
        "J_regressor_prior": scipy.sparse.csr_matrix(j_regressor_prior),
        "kintree_table": arrays["kintree_table"], "f": arrays["f"], "J": np.ones((24, 3)),
        "bs_type": "lrotmin", "bs_style": "lbs", "pose_training_info": {"num_subjects": 40},
    }
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = chumpy, chumpy_ch
    try:
        data = python2_style_pickle(model, protocol)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    if sparse_module != "scipy.sparse._csc":  # the pre-1.8 scipy module path of the original files
        data = data.replace(b"cscipy.sparse._csc\n", f"c{sparse_module}\n".encode())
    assert f"c{sparse_module}\ncsc_matrix\n".encode() in data and b"cchumpy.ch\nCh\n" in data
    path = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    path.write_bytes(data)

    assert "chumpy" not in sys.modules and importlib.util.find_spec("chumpy") is None
    loaded = load_smpl_pickle(path)
    assert "chumpy" not in sys.modules
    for key in ("v_template", "shapedirs", "posedirs", "weights", "J_regressor", "kintree_table", "f"):
        assert type(loaded[key]) is np.ndarray, key
        np.testing.assert_array_equal(loaded[key], arrays[key])
    np.testing.assert_array_equal(loaded["J_regressor_prior"], j_regressor_prior)
    assert loaded["bs_type"] == "lrotmin" and loaded["pose_training_info"] == {"num_subjects": 40}


class Exploit:
    def __init__(self, func, *args):
        self.call = (func, args)

    def __reduce__(self):
        return self.call


@pytest.mark.parametrize("global_name", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_pickle_naming_other_global_is_refused(tmp_path, arrays, global_name):
    marker = tmp_path / "marker"
    if global_name == "os.system":  # hand-written: pickle itself would name posix.system
        data = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    elif global_name == "builtins.eval":
        data = pickle.dumps({"v_template": Exploit(eval, f"open({str(marker)!r}, 'w').close()")}, protocol=4)
    else:
        data = pickle.dumps({**arrays, "x": Exploit(subprocess.Popen, ["touch", str(marker)])}, protocol=3)
    assert global_name.split(".")[1].encode() in data
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError) as err:
        load_smpl_pickle(path)
    assert isinstance(err.value, pickle.UnpicklingError)
    assert str(path) in str(err.value) and global_name in str(err.value)
    assert not marker.exists()
    # The same bytes through the plain unpickler do run the command: the marker check above is meaningful.
    result = pickle.loads(data)
    if global_name == "subprocess.Popen":
        result["x"].wait()
    assert marker.exists()


def test_wrong_layout_names_the_key(tmp_path, arrays):
    bad_shape = write_pickle(tmp_path / "a.pkl", {**arrays, "posedirs": arrays["posedirs"][:, :, :20]})
    with pytest.raises(BodyModelFileError, match="posedirs") as err:
        load_smpl_pickle(bad_shape)
    assert str(bad_shape) in str(err.value)
    missing = write_pickle(tmp_path / "b.pkl", {k: v for k, v in arrays.items() if k != "J_regressor"})
    with pytest.raises(BodyModelFileError, match="J_regressor"):
        load_smpl_pickle(missing)
    few_betas = write_pickle(tmp_path / "c.pkl", {**arrays, "shapedirs": arrays["shapedirs"][:, :, :5]})
    with pytest.raises(BodyModelFileError, match="shapedirs"):
        load_smpl_pickle(few_betas)


def test_unreadable_files_give_body_model_error(tmp_path):
    not_a_dict = write_pickle(tmp_path / "list.pkl", [1, 2, 3])
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"v_template": np.zeros((6890, 3))})[:100])
    html = tmp_path / "html.pkl"
    html.write_bytes(b"<html>login required</html>")
    for path in (not_a_dict, truncated, html, tmp_path / "absent.pkl"):
        with pytest.raises(BodyModelFileError, match=str(path)):
            load_smpl_pickle(path)


# ----------------------------------------------------------------------------------------------------------------------
# Finding files


NAMINGS = {
    "neutral": ("SMPL_NEUTRAL.pkl", "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl",
                "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"),
    "male": ("SMPL_MALE.pkl", "basicModel_m_lbs_10_207_0_v1.0.0.pkl", "basicmodel_m_lbs_10_207_0_v1.1.0.pkl"),
    "female": ("SMPL_FEMALE.pkl", "basicModel_f_lbs_10_207_0_v1.0.0.pkl", "basicmodel_f_lbs_10_207_0_v1.1.0.pkl"),
}


@pytest.mark.parametrize("gender,name", [(g, n) for g, names in NAMINGS.items() for n in names])
def test_both_namings_are_found(tmp_path, gender, name):
    (tmp_path / name).touch()
    assert find_smpl_file(tmp_path, gender) == tmp_path / name
    for other in NAMINGS:
        if other != gender:
            with pytest.raises(BodyModelFileError):
                find_smpl_file(tmp_path, other)


def test_missing_smpl_file_error_is_actionable(tmp_path):
    smpl_dir = tmp_path / "data" / "body_models" / "smpl"
    smpl_dir.mkdir(parents=True)
    for gender, names in NAMINGS.items():
        with pytest.raises(BodyModelFileError) as err:
            find_smpl_file(smpl_dir, gender)
        message = str(err.value)
        assert isinstance(err.value, FileNotFoundError)
        assert str(smpl_dir) in message and "smpl_dir" in message
        assert all(name in message for name in names[:2])
        assert SMPL_URL in message
        if gender == "neutral":  # the neutral model comes with SMPLify
            assert "https://smplify.is.tue.mpg.de" in message
    with pytest.raises(BodyModelFileError, match=SMPL_URL):
        load_smpl(tmp_path / "nowhere", "male")
    with pytest.raises(ValueError, match="gender"):
        find_smpl_file(smpl_dir, "child")


def test_load_smpl_end_to_end(tmp_path, arrays):
    write_pickle(tmp_path / "basicModel_f_lbs_10_207_0_v1.0.0.pkl", arrays)
    layer = load_smpl(tmp_path, "female")
    with torch.no_grad():
        vertices = layer(torch.zeros(1, 72), torch.zeros(1, 10))
    np.testing.assert_allclose(vertices[0].numpy(), arrays["v_template"], atol=1e-6)


def test_load_regressor(tmp_path):
    regressor = np.random.default_rng(3).random((9, 6890))
    np.save(tmp_path / "J_regressor_extra.npy", regressor)
    loaded = load_regressor(tmp_path / "J_regressor_extra.npy", (9, 6890), "SPIN extra regressor", "SPIN's data")
    assert loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, regressor, rtol=1e-6)
    with pytest.raises(BodyModelFileError, match="SPIN's data") as err:
        load_regressor(tmp_path / "absent.npy", (9, 6890), "SPIN extra regressor", "SPIN's data")
    assert str(tmp_path / "absent.npy") in str(err.value) and "SPIN extra regressor" in str(err.value)
    with pytest.raises(BodyModelFileError, match=r"\(9, 6890\).*\(17, 6890\)"):
        load_regressor(tmp_path / "J_regressor_extra.npy", (17, 6890), "H36M regressor", "I2L-MeshNet")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BodyModelFileError, match="objects.npy"):
        load_regressor(tmp_path / "objects.npy", (1,), "H36M regressor", "I2L-MeshNet")


# ----------------------------------------------------------------------------------------------------------------------
# Module behaviour


class Holder(nn.Module):
    def __init__(self, arrays):
        super().__init__()
        self.human_model_layer = SMPLLayer(arrays)
        self.head = nn.Linear(2, 2)


def test_smpl_arrays_stay_out_of_state_dict(arrays):
    holder = Holder(arrays)
    assert set(holder.state_dict()) == {"head.weight", "head.bias"}
    Holder(arrays).load_state_dict(holder.state_dict(), strict=True)
    buffers = dict(holder.human_model_layer.named_buffers())
    assert len(buffers) >= 6 and "smpl.v_template" in buffers

    pose, betas = torch.full((1, 72), 0.1), torch.full((1, 10), 0.5)
    with torch.no_grad():
        expected = holder.human_model_layer(pose, betas)
        holder.to(torch.float64)
        assert all(b.dtype == torch.float64 for b in holder.human_model_layer.buffers() if b.is_floating_point())
        vertices = holder.human_model_layer(pose, betas)
    assert vertices.dtype == torch.float64
    torch.testing.assert_close(vertices.float(), expected, atol=1e-5, rtol=0)
    holder.to("meta")
    assert all(b.device.type == "meta" for b in holder.buffers())


def test_joint_regressor_30():
    rng = np.random.default_rng(4)
    j24, extra = rng.random((24, 6890)), rng.random((9, 6890))
    j30 = joint_regressor_30(j24, extra)
    assert j30.shape == (30, 6890) and j30.dtype == np.float32
    np.testing.assert_allclose(j30[:24], j24, rtol=1e-6)
    for row, vertex in zip(range(24, 29), (331, 2802, 6262, 3489, 3990)):  # spec 1.6: nose, eyes, ears
        expected = np.zeros(6890)
        expected[vertex] = 1
        np.testing.assert_array_equal(j30[row], expected)
    np.testing.assert_allclose(j30[29], extra[3], rtol=1e-6)  # SPIN row 3 = head top
    with pytest.raises(ValueError):
        joint_regressor_30(j24[:20], extra)
