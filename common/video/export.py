"""Results in the layouts other tools import: per-person SMPL parameter sequences (.npz) and meshes (.glb, .ply).

The .npz holds what smplx's SMPL forward takes (global_orient (T, 3), body_pose (T, 69) axis-angle, betas
(T, 10), transl (T, 3)) plus frame_ids (T,) and the image camera (focal (2,), princpt (2,) pixels), the layout
that SMPL add-ons for Blender and smplx scripts read. The parameters live in the image camera's frame (x right,
y down, z forward, metres): a tool with y up sees the person upside down until it turns the scene 180 degrees
about x.
"""
from pathlib import Path

import numpy as np

SMPL_NUM_JOINTS = 24
MESH_FORMATS = ("obj", "ply", "glb")


def write_smpl_sequence(path, frame_ids, poses, betas, transl, focal, princpt, **extra):
    """Write one person's sequence: frame_ids (T,), poses (T, 72) axis-angle with the root first, betas (T, 10),
    transl (T, 3) metres; focal and princpt (2,) pixels; extra arrays are stored as given."""
    poses = np.asarray(poses, np.float32).reshape(-1, SMPL_NUM_JOINTS * 3)
    np.savez(path, global_orient=poses[:, :3], body_pose=poses[:, 3:],
             betas=np.asarray(betas, np.float32).reshape(len(poses), -1),
             transl=np.asarray(transl, np.float32).reshape(len(poses), 3),
             frame_ids=np.asarray(frame_ids, np.int64).reshape(len(poses)),
             focal=np.asarray(focal, np.float64).reshape(2), princpt=np.asarray(princpt, np.float64).reshape(2),
             gender=np.array("neutral"), **extra)


def write_mesh(path, vertices, faces):
    """A triangle mesh (vertices (V, 3) metres, faces (F, 3) 0-based) as .ply (binary) or .glb, by the suffix,
    through trimesh (vertex order kept, so vertex i is SMPL vertex i)."""
    import trimesh

    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in ("ply", "glb"):
        raise ValueError(f"{path}: write_mesh writes .ply or .glb, not .{suffix}")
    mesh = trimesh.Trimesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64), process=False)
    mesh.export(str(path), file_type=suffix)
