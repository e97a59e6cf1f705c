"""VPoser v1, the body-pose prior of SMPLify-X (human_body_prior 0.8.x), written from its description (spec 2.5).

JOTR uses only the decoder: a 32-d latent code -> 21 body-joint rotations (SMPL joints 1..21). The encoder is kept
so that official checkpoints and VPoser snapshots load completely, and to encode poses into the latent space.
Parameter names are the snapshot's (`bodyprior_*`), so `TR00_E096.pt` loads without renaming.
"""
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.geometry import rot6d_to_rotmat, rotmat_to_axis_angle

NUM_BODY_JOINTS = 21


class VPoserV1(nn.Module):
    def __init__(self, num_neurons=512, latent_dim=32, num_joints=NUM_BODY_JOINTS):
        super().__init__()
        in_features = num_joints * 3
        self.num_joints = num_joints
        self.bodyprior_enc_bn1 = nn.BatchNorm1d(in_features)
        self.bodyprior_enc_fc1 = nn.Linear(in_features, num_neurons)
        self.bodyprior_enc_bn2 = nn.BatchNorm1d(num_neurons)
        self.bodyprior_enc_fc2 = nn.Linear(num_neurons, num_neurons)
        self.bodyprior_enc_mu = nn.Linear(num_neurons, latent_dim)
        self.bodyprior_enc_logvar = nn.Linear(num_neurons, latent_dim)
        self.bodyprior_dec_fc1 = nn.Linear(latent_dim, num_neurons)
        self.bodyprior_dec_fc2 = nn.Linear(num_neurons, num_neurons)
        self.bodyprior_dec_out = nn.Linear(num_neurons, num_joints * 6)
        self.dropout = nn.Dropout(0.1)

    def encode(self, body_pose):
        """body_pose (B, 63) axis-angle of SMPL joints 1..21 -> (mean, raw scale), each (B, latent_dim).

        human_body_prior turns the second head (named `logvar`) into the posterior's standard deviation with a
        softplus; JOTR never calls the encoder."""
        x = self.bodyprior_enc_bn1(body_pose)
        x = F.leaky_relu(self.bodyprior_enc_fc1(x), 0.2)
        x = self.bodyprior_enc_bn2(x)
        x = self.dropout(x)
        x = F.leaky_relu(self.bodyprior_enc_fc2(x), 0.2)
        return self.bodyprior_enc_mu(x), self.bodyprior_enc_logvar(x)

    def decode(self, latent):
        """latent (B, latent_dim) -> body pose (B, 21, 3) axis-angle (no NaN clean-up, as in the original)."""
        x = F.leaky_relu(self.bodyprior_dec_fc1(latent), 0.2)
        x = self.dropout(x)
        x = F.leaky_relu(self.bodyprior_dec_fc2(x), 0.2)
        rotmat = rot6d_to_rotmat(self.bodyprior_dec_out(x).reshape(-1, self.num_joints, 6))
        return rotmat_to_axis_angle(rotmat)


def find_vposer_snapshot(path):
    """The VPoser v1.0 weights: `path` is the `.pt` file itself or the unpacked `vposer_v1_0` folder, whose
    `snapshots/` holds `TR00_E096.pt` (the newest snapshot is used, as human_body_prior does)."""
    path = Path(path)
    if path.is_file():
        return path
    snapshots = sorted((path / "snapshots").glob("*.pt"), key=lambda p: p.stat().st_mtime) if path.is_dir() else []
    if not snapshots:
        raise FileNotFoundError(
            f"VPoser v1.0 weights not found at '{path}'. Expected the file itself or a folder containing "
            f"snapshots/TR00_E096.pt (config key `vposer_path`). Download 'VPoser v1.0' from "
            f"https://smpl-x.is.tue.mpg.de (registration required) and unpack it there, or start from an official "
            f"JOTR checkpoint (it contains the VPoser weights), or set pose_head=rot6d to train without VPoser.")
    return snapshots[-1]


def load_vposer_weights(vposer, path):
    """Load a VPoser v1.0 snapshot state_dict (keys `bodyprior_*`, optionally `module.`-prefixed) into `vposer`."""
    file = find_vposer_snapshot(path)
    state = torch.load(file, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = vposer.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{file} is not a VPoser v1 snapshot: missing keys {missing}, unexpected keys {unexpected}")
    return file
