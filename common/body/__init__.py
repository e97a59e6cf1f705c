"""The SMPL body model (loading without chumpy, LBS, joint regressors, gendered meshes) and the joint sets with
their names and mappings (spec 1.5, 1.6, 5.1)."""
