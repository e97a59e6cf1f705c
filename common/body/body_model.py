"""SMPL body model: safe loading of the user's SMPL files, the J30 joint regressor and an SMPL layer.

The SMPL files are licence-restricted: users download them and put them under `data/body_models/`
(config values `smpl_dir`, `j_regressor_extra_path`, `j_regressor_h36m_path`). The original pickles
(Python 2, 2015) store some arrays as chumpy objects and scipy sparse matrices; chumpy does not run on
current Python/numpy, and a pickle can run arbitrary code when loaded. `load_smpl_pickle` therefore reads
them with a restricted unpickler that admits only the numpy, scipy-sparse and chumpy classes such files
contain (mapped to our own placeholder classes) and refuses every other global.

`SMPLLayer` runs SMPL through smplx (spec 1.5: same Rodrigues, pose-blend and LBS semantics as the
smplpytorch layer of the official code). Its buffers are not saved in state_dicts, so our checkpoints
never embed the licensed arrays (the official checkpoints do, spec 2.3). Everything is in metres.
"""
import codecs
import contextlib
import importlib
import io
import pathlib
import pickle

import numpy as np
import smplx
import torch
from torch import nn

from common.body.joint_sets import HEAD_TOP_EXTRA_ROW, SMPL30_FACE_VERTICES
from common.errors import UserError

NUM_VERTICES = 6890
NUM_FACES = 13776
NUM_JOINTS = 24
NUM_BETAS = 10
# Gender codes of batched targets (the 3DPW annotations' "gender" strings, as integers a DataLoader can collate).
GENDER_CODES = {"neutral": 0, "male": 1, "female": 2}
GENDER_NAMES = {code: name for name, code in GENDER_CODES.items()}

SMPL_URL = "https://smpl.is.tue.mpg.de"
SMPLIFY_URL = "https://smplify.is.tue.mpg.de"

# Accepted file names per gender: smplx naming, SMPL-website v1.0.0 / SMPLify naming, SMPL v1.1.0 naming.
# Matched case-insensitively (the v1.0.0 and v1.1.0 releases spell 'basicModel' / 'basicmodel').
SMPL_FILE_NAMES = {
    "neutral": ("SMPL_NEUTRAL.pkl", "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl",
                "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"),
    "male": ("SMPL_MALE.pkl", "basicModel_m_lbs_10_207_0_v1.0.0.pkl", "basicmodel_m_lbs_10_207_0_v1.1.0.pkl"),
    "female": ("SMPL_FEMALE.pkl", "basicModel_f_lbs_10_207_0_v1.0.0.pkl", "basicmodel_f_lbs_10_207_0_v1.1.0.pkl"),
}

# Expected array shapes of an SMPL model file; None = any size (shapedirs has 10 or 300 components).
SMPL_LAYOUT = {
    "v_template": (NUM_VERTICES, 3),
    "shapedirs": (NUM_VERTICES, 3, None),
    "posedirs": (NUM_VERTICES, 3, 9 * (NUM_JOINTS - 1)),
    "J_regressor": (NUM_JOINTS, NUM_VERTICES),
    "weights": (NUM_VERTICES, NUM_JOINTS),
    "kintree_table": (2, NUM_JOINTS),
    "f": (NUM_FACES, 3),
}


class BodyModelFileError(UserError, FileNotFoundError):
    """A body-model file is missing or invalid. The message says which file, where to put it and where to get it."""


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """A pickle names a global outside the SMPL allow-list; it was not loaded (loading could run code)."""


# ----------------------------------------------------------------------------------------------------------------------
# Restricted unpickler


class _ChumpyArray:
    """Stands in for `chumpy.ch.Ch`. A plain Ch pickles its __dict__, whose 'x' entry holds the value;
    the other entries (_dirty_vars, _itr, _depends_on_deps, ...) are chumpy bookkeeping and are ignored."""

    def __setstate__(self, state):
        self.state = state

    def dense(self):
        state = getattr(self, "state", None)
        if not isinstance(state, dict) or "x" not in state:
            raise ValueError("a chumpy object without a stored value ('x'); only plain chumpy arrays are supported")
        return np.asarray(_to_numpy(state["x"]))


class _SparseMatrix:
    """Stands in for a scipy compressed sparse matrix: its pickled state holds data/indices/indptr and the shape
    ('_shape'; very old scipy: 'shape'); old scipy also stores 'format'."""

    format = None  # 'csc' or 'csr', set by the subclasses

    def __setstate__(self, state):
        self.state = state

    def dense(self):
        state = getattr(self, "state", None)
        if not isinstance(state, dict) or not {"data", "indices", "indptr"} <= state.keys():
            raise ValueError(f"a {self.format} sparse matrix without data/indices/indptr")
        if state.get("format", self.format) != self.format:
            raise ValueError(f"a {self.format}_matrix whose state says format {state['format']!r}")
        shape = state.get("_shape", state.get("shape"))
        data = np.asarray(_to_numpy(state["data"]))
        indices = np.asarray(_to_numpy(state["indices"]), dtype=np.int64)
        indptr = np.asarray(_to_numpy(state["indptr"]), dtype=np.int64)
        rows, cols = (int(s) for s in shape)
        n_major = cols if self.format == "csc" else rows
        n_minor = rows if self.format == "csc" else cols
        if (len(indptr) != n_major + 1 or indptr[0] != 0 or indptr[-1] != len(data) or len(indices) != len(data)
                or np.any(np.diff(indptr) < 0) or (len(indices) and (indices.min() < 0 or indices.max() >= n_minor))):
            raise ValueError(f"an inconsistent {self.format} sparse matrix of shape {(rows, cols)}")
        major = np.repeat(np.arange(n_major), np.diff(indptr))
        out = np.zeros((rows, cols), dtype=data.dtype)
        # Duplicate entries sum, as in scipy's todense().
        if self.format == "csc":
            np.add.at(out, (indices, major), data)
        else:
            np.add.at(out, (major, indices), data)
        return out


class _CSCMatrix(_SparseMatrix):
    format = "csc"


class _CSRMatrix(_SparseMatrix):
    format = "csr"


_PLACEHOLDERS = (_ChumpyArray, _CSCMatrix, _CSRMatrix)


def _reconstructor(cls, base, state):
    """copyreg._reconstructor (protocol 0/1 pickles of new-style objects), restricted to our placeholders."""
    if cls not in _PLACEHOLDERS or base is not object or state is not None:
        raise pickle.UnpicklingError(f"unexpected copy_reg._reconstructor call for {cls!r}")
    return object.__new__(cls)


def _encode_latin1(text, encoding):
    """_codecs.encode as Python 3 writes bytes in protocol <= 2 pickles; only the latin-1 codec is allowed."""
    if encoding != "latin1":  # what pickle writes; no codec lookup (it may import modules)
        raise pickle.UnpicklingError(f"refused _codecs.encode with codec {encoding!r}")
    return codecs.encode(text, "latin1")


def _numpy_core(submodule):
    try:  # numpy >= 2 moved numpy.core to numpy._core (importing numpy.core warns there)
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{submodule}")


def _allowed_globals():
    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("copy_reg", "_reconstructor"): _reconstructor,
        ("copyreg", "_reconstructor"): _reconstructor,
        ("__builtin__", "object"): object,
        ("builtins", "object"): object,
        ("__builtin__", "set"): set,  # chumpy's pickled state contains a set (_dirty_vars)
        ("builtins", "set"): set,
        ("_codecs", "encode"): _encode_latin1,
        ("chumpy.ch", "Ch"): _ChumpyArray,  # the only chumpy class in the SMPL / SMPLify model files
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    for fmt, placeholder in (("csc", _CSCMatrix), ("csr", _CSRMatrix)):
        for module in ("scipy.sparse", f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):
            allowed[(module, f"{fmt}_matrix")] = placeholder
            allowed[(module, f"{fmt}_array")] = placeholder
    return allowed


class _SMPLUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        # latin1: the SMPL site's pickles were written by Python 2; numpy decodes its array bytes from latin-1 str.
        super().__init__(file, encoding="latin1")
        self.path = path
        self.allowed = _allowed_globals()

    def find_class(self, module, name):
        # Called for every global the pickle names (GLOBAL, STACK_GLOBAL, INST, OBJ, EXT*), before anything runs.
        if (module, name) not in self.allowed:
            raise UnsafePickleError(
                f"{self.path}: refused to load, the pickle names the global '{module}.{name}'. An SMPL model file "
                "may only contain numpy arrays, scipy sparse matrices and chumpy arrays; loading this one could run "
                f"code. Use the original file from {SMPL_URL} (or {SMPLIFY_URL} for the neutral model).")
        return self.allowed[(module, name)]

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.path}: refused to load, the pickle uses persistent ids")


def _to_numpy(value):
    """Placeholders -> dense numpy arrays, recursively through dicts/lists/tuples; anything else unchanged."""
    if isinstance(value, _PLACEHOLDERS):
        return value.dense()
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy(v) for v in value)
    return value


def _layout_problem(arrays):
    """None if `arrays` has the SMPL layout (SMPL_LAYOUT), else a description naming the key."""
    for key, expected in SMPL_LAYOUT.items():
        if key not in arrays:
            return f"key '{key}' is missing"
        shape = np.shape(arrays[key])
        if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
            wanted = tuple("any" if e is None else e for e in expected)
            return f"key '{key}' has shape {shape}, expected {wanted}"
    if np.shape(arrays["shapedirs"])[2] < NUM_BETAS:
        return f"key 'shapedirs' has {np.shape(arrays['shapedirs'])[2]} shape components, expected >= {NUM_BETAS}"
    return None


def load_smpl_pickle(path):
    """Read an SMPL model pickle without chumpy and without running code from the file.

    Returns {key: value} with every chumpy array / scipy sparse matrix converted to a dense numpy array (numpy
    arrays kept, strings and other plain values left as they are). The SMPL layout is checked: v_template
    (6890, 3) m, shapedirs (6890, 3, >=10), posedirs (6890, 3, 207), J_regressor (24, 6890), weights (6890, 24),
    kintree_table (2, 24), f (13776, 3).
    Raises UnsafePickleError if the file names any other global, BodyModelFileError if it is missing, unreadable
    or not SMPL-shaped.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise BodyModelFileError(f"SMPL model file not found: {path}. Get SMPL from {SMPL_URL} (neutral model: "
                                 f"SMPLify, {SMPLIFY_URL}; registration required).")
    try:
        with open(path, "rb") as f:
            content = _SMPLUnpickler(f, path).load()
        content = _to_numpy(content)
    except UnsafePickleError:
        raise
    except Exception as err:  # truncated file, HTML error page, bad placeholder state, ...
        raise BodyModelFileError(f"{path} is not a readable SMPL model pickle ({type(err).__name__}: {err}). "
                                 f"Download it again from {SMPL_URL}.") from err
    if not isinstance(content, dict):
        raise BodyModelFileError(f"{path} is not an SMPL model: it holds a {type(content).__name__}, expected a dict "
                                 f"of arrays. Download the model from {SMPL_URL}.")
    problem = _layout_problem(content)
    if problem:
        raise BodyModelFileError(f"{path} is not an SMPL model file: {problem}. Download the model from {SMPL_URL}.")
    return content


# ----------------------------------------------------------------------------------------------------------------------
# Files


def find_smpl_file(smpl_dir, gender):
    """Path of the SMPL model of `gender` ('neutral', 'male' or 'female') in `smpl_dir`, accepting the smplx
    naming (SMPL_NEUTRAL.pkl) and the SMPL-website / SMPLify naming (basicModel_neutral_lbs_10_207_0_v1.0.0.pkl)."""
    if gender not in SMPL_FILE_NAMES:
        raise ValueError(f"SMPL gender must be one of {tuple(SMPL_FILE_NAMES)}, got {gender!r}")
    smpl_dir = pathlib.Path(smpl_dir)
    accepted = SMPL_FILE_NAMES[gender]
    present = {p.name.lower(): p for p in smpl_dir.iterdir() if p.is_file()} if smpl_dir.is_dir() else {}
    for name in accepted:
        if name.lower() in present:
            return present[name.lower()]
    where = "" if smpl_dir.is_dir() else " (the directory does not exist)"
    source = (f"SMPLify, {SMPLIFY_URL} (the SMPL site {SMPL_URL} also offers it in SMPL v1.1.0)"
              if gender == "neutral" else f"the SMPL website, {SMPL_URL}")
    raise BodyModelFileError(
        f"SMPL {gender} model not found in {smpl_dir}{where}. Put one of these files there: {', '.join(accepted)} "
        f"(or point the config key `smpl_dir`, default data/body_models/smpl, to the directory holding it). "
        f"Get the {gender} model from {source}; registration required, the files may not be redistributed.")


def load_regressor(path, shape, what, source):
    """A joint regressor stored as .npy, e.g. J_regressor_extra.npy (9, 6890) or J_regressor_h36m_correct.npy
    (17, 6890). `what` names it and `source` says where to get it (both go into the error messages).
    Returns a float32 array of `shape`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise BodyModelFileError(f"{what} not found: {path}. Put the file there (or set its path in the config); "
                                 f"get it from {source}.")
    try:
        regressor = np.load(path, allow_pickle=False)
    except Exception as err:
        raise BodyModelFileError(f"{path} is not a readable {what} .npy file ({type(err).__name__}: {err}); "
                                 f"get it from {source}.") from err
    if regressor.shape != tuple(shape):
        raise BodyModelFileError(f"{path}: {what} has shape {regressor.shape}, expected {tuple(shape)}; "
                                 f"get the right file from {source}.")
    return regressor.astype(np.float32)


def joint_regressor_30(j_regressor_24, j_regressor_extra):
    """The J30 regressor (spec 1.6), (30, 6890) float32: rows 0-23 the SMPL J_regressor (24, 6890); rows 24-28
    one-hot at the Nose, L_Eye, R_Eye, L_Ear, R_Ear vertices; row 29 (Head_top) the SPIN extra regressor's
    head-top row (j_regressor_extra is (9, 6890))."""
    j_regressor_24 = np.asarray(j_regressor_24, dtype=np.float32)
    j_regressor_extra = np.asarray(j_regressor_extra, dtype=np.float32)
    if j_regressor_24.shape != (NUM_JOINTS, NUM_VERTICES):
        raise ValueError(f"SMPL J_regressor must be ({NUM_JOINTS}, {NUM_VERTICES}), got {j_regressor_24.shape}")
    if j_regressor_extra.ndim != 2 or j_regressor_extra.shape[1] != NUM_VERTICES \
            or j_regressor_extra.shape[0] <= HEAD_TOP_EXTRA_ROW:
        raise ValueError(f"J_regressor_extra must be (9, {NUM_VERTICES}), got {j_regressor_extra.shape}")
    face = np.zeros((len(SMPL30_FACE_VERTICES), NUM_VERTICES), dtype=np.float32)
    face[np.arange(len(SMPL30_FACE_VERTICES)), list(SMPL30_FACE_VERTICES)] = 1.0
    return np.concatenate([j_regressor_24, face, j_regressor_extra[HEAD_TOP_EXTRA_ROW][None]], axis=0)


# ----------------------------------------------------------------------------------------------------------------------
# Layer


def _precise_dtype(dtype):
    # float64 stays float64 (tests, double-precision fitting); anything narrower runs in float32 because
    # rotations and the kinematic chain in bf16/fp16 are too coarse.
    return torch.float64 if dtype == torch.float64 else torch.float32


class SMPLLayer(nn.Module):
    """SMPL (smplx.SMPL, no learnable parameters) built from the arrays of an SMPL model file.

    Attributes: `faces` (13776, 3) int64 numpy; `arrays` the dict it was built from (for export, or comparing
    with the `human_model_layer.th_*` arrays of official checkpoints). Its buffers are non-persistent: they move
    with .to(device) but are never written to a state_dict (the arrays are licence-restricted).
    """

    def __init__(self, arrays, gender="neutral"):
        super().__init__()
        problem = _layout_problem(arrays)
        if problem:
            raise ValueError(f"SMPLLayer needs SMPL model arrays: {problem}")
        self.arrays = arrays
        self.gender = gender
        self.faces = np.asarray(arrays["f"], dtype=np.int64)
        # smplx prints a warning for every model with fewer than 300 shape components (i.e. all 10-beta files).
        with contextlib.redirect_stdout(io.StringIO()):
            self.smpl = smplx.SMPL(
                "", data_struct=smplx.utils.Struct(**arrays), create_betas=False, create_global_orient=False,
                create_body_pose=False, create_transl=False, num_betas=NUM_BETAS, gender=gender)
        for module in self.smpl.modules():
            for name, buffer in list(module.named_buffers(recurse=False)):
                delattr(module, name)
                module.register_buffer(name, buffer, persistent=False)

    def forward(self, pose, betas, transl=None):
        """pose (B, 72) axis-angle in SMPL joint order (root first), betas (B, 10), transl (B, 3) metres or None.
        Returns vertices (B, 6890, 3) in metres, float32 (float64 if the layer was converted to float64),
        computed with autocast disabled whatever the input dtype."""
        if pose.ndim != 2 or pose.shape[1] != 3 * NUM_JOINTS:
            raise ValueError(f"SMPL pose must be (B, {3 * NUM_JOINTS}) axis-angle, got {tuple(pose.shape)}")
        if betas.ndim != 2 or betas.shape[1] != NUM_BETAS:
            raise ValueError(f"SMPL betas must be (B, {NUM_BETAS}), got {tuple(betas.shape)}")
        dtype = _precise_dtype(self.smpl.v_template.dtype)
        if self.smpl.v_template.dtype != dtype:  # e.g. after model.half(): keep SMPL in float32
            self.smpl.to(dtype)
        with torch.autocast(device_type=pose.device.type, enabled=False):
            output = self.smpl(
                betas=betas.to(dtype), global_orient=pose[:, :3].to(dtype), body_pose=pose[:, 3:].to(dtype),
                transl=None if transl is None else transl.to(dtype))
        return output.vertices

    def joints24(self, vertices):
        """The 24 SMPL joints regressed from `vertices` (B, 6890, 3) with J_regressor -> (B, 24, 3), same units."""
        dtype = _precise_dtype(vertices.dtype)
        with torch.autocast(device_type=vertices.device.type, enabled=False):
            return torch.einsum("jv,bvc->bjc", self.smpl.J_regressor.to(dtype), vertices.to(dtype))


def load_smpl(smpl_dir, gender="neutral"):
    """SMPLLayer for the SMPL model of `gender` found in `smpl_dir` (see find_smpl_file)."""
    return SMPLLayer(load_smpl_pickle(find_smpl_file(smpl_dir, gender)), gender=gender)


def gendered_meshes(targets, smpl_by_gender):
    """Ground-truth meshes of a batch: the SMPL model of each person's annotated gender.

    targets: batched targets with smpl_pose (B, 72), smpl_shape (B, 10), smpl_trans (B, 3), gender (B,) in
    GENDER_CODES; smpl_by_gender: {'male': fn, 'female': fn[, 'neutral': fn]}, fn(pose (N, 72), betas (N, 10),
    transl (N, 3)) -> vertices (N, V, 3) in metres (e.g. `load_smpl(smpl_dir, gender)`).
    Returns (B, V, 3) vertices in metres, in the annotation's camera frame, on the models' device.
    """
    gender = torch.as_tensor(targets["gender"]).reshape(-1).cpu()
    meshes = None
    for code in torch.unique(gender).tolist():
        name = GENDER_NAMES.get(code)
        if name not in smpl_by_gender:
            raise KeyError(f"gendered_meshes: batch has gender code {code} ({name}) but no body model for it; "
                           f"models given: {sorted(smpl_by_gender)}")
        rows = torch.nonzero(gender == code).reshape(-1)
        verts = smpl_by_gender[name](*(targets[k][rows] for k in ("smpl_pose", "smpl_shape", "smpl_trans")))
        if meshes is None:
            meshes = verts.new_zeros((len(gender),) + tuple(verts.shape[1:]))
        meshes[rows.to(verts.device)] = verts
    return meshes
