"""The JOTR network (spec 1): the model (jotr.py), its ResNet backbone, the transformer with 3D joint refinement,
positional encodings and the VPoser decoder of the pose head."""
