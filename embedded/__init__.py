"""The embedded world: everything `make demo` needs that the paper's data cannot give a fresh clone.

A procedural body model in the SMPL file layout (mannequin), a synthetic occluded-people benchmark written in the
real 3DPW and MuCo-3DHP formats (poses, camera, bodies, textures, render, scene, detections, writers, generate),
short synthetic video clips (clip), the mean-pose baseline (baseline) and `make demo`'s driver (demo). The paper's
code (common, data, main) never imports this package; it imports them and runs through exactly their code.
"""
