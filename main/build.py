"""Builds the objects the entry points need from a Config (library code never sees the config itself)."""
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from common.body.body_model import joint_regressor_30, load_regressor, load_smpl
from common.model.jotr import JOTR
from common.speed import set_channels_last, use_fast_cpu_dropout
from common.training.distributed import ShardSampler, seed_worker
from data.registry import build_test_dataset

SPIN_DATA = "SPIN's data release (http://visiondata.cis.upenn.edu/spin/data.tar.gz, file data/J_regressor_extra.npy)"
H36M_REGRESSOR_SOURCE = ("the 3DCrowdNet / I2L-MeshNet data release (Human36M/J_regressor_h36m_correct.npy, "
                         "linked from github.com/hongsukchoi/3DCrowdNet_RELEASE)")


def resolve_device(name):
    """'auto' -> CUDA when available, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_body_model(cfg, gender="neutral"):
    return load_smpl(cfg.smpl_dir, gender)


def build_joint_regressor(cfg, body_model):
    """The (30, V) SMPL-30 regressor: the body model's 24 joints, 5 face vertices and SPIN's head-top row."""
    num_verts = body_model.arrays["v_template"].shape[0]
    extra = load_regressor(cfg.j_regressor_extra_path, (9, num_verts), "J_regressor_extra.npy (SPIN extra regressor)",
                           SPIN_DATA)
    return joint_regressor_30(body_model.arrays["J_regressor"], extra)


def build_h36m_regressor(cfg, num_verts=6890):
    return load_regressor(cfg.j_regressor_h36m_path, (17, num_verts), "J_regressor_h36m_correct.npy",
                          H36M_REGRESSOR_SOURCE)


def build_model(cfg, body_model=None):
    """The JOTR network of `cfg` with its neutral body model (loaded from cfg.smpl_dir unless given)."""
    body_model = body_model if body_model is not None else build_body_model(cfg)
    model = JOTR(
        body_model, build_joint_regressor(cfg, body_model),
        resnet_type=cfg.resnet_type, input_img_shape=cfg.input_img_shape, output_hm_shape=cfg.output_hm_shape,
        sigma=cfg.sigma, focal=cfg.focal, princpt=cfg.princpt, camera_3d_size=cfg.camera_3d_size,
        enc_layers=cfg.enc_layers, dec_layers=cfg.dec_layers, hidden_dim=cfg.hidden_dim, nheads=cfg.nheads,
        dim_feedforward=cfg.dim_feedforward, voxel_dim_feedforward=cfg.voxel_dim_feedforward, dropout=cfg.dropout,
        pose_head=cfg.pose_head, input_joint_mask_prob=cfg.input_joint_mask_prob, render=cfg.render,
        backbone_init=cfg.backbone_init, image_gate=cfg.image_gate, image_gate_init=cfg.image_gate_init,
    )
    if cfg.fast_cpu_dropout:
        use_fast_cpu_dropout(model)
    return set_channels_last(model, cfg.channels_last)


def build_gendered_body_models(cfg, device):
    """Ground-truth body models for evaluation (3DPW annotates each person's gender)."""
    return {gender: build_body_model(cfg, gender).to(device) for gender in ("male", "female", "neutral")}


@dataclass
class TestSet:
    loader: DataLoader  # this process's shard (ShardSampler): every sample is evaluated once over all processes
    size: int  # samples in the whole test set
    h36m_regressor: np.ndarray  # (17, V) evaluation joints: the set's own file if it ships one (3DOH), else cfg's


def build_test_sets(cfg, world, num_verts=6890):
    """{name: TestSet} for cfg.testsets."""
    sets, default_regressor = {}, None
    for name in cfg.testsets:
        options = {"crowd_pose_source": cfg.crowd_pose_source} if name == "3dpw-crowd" else {}
        dataset = build_test_dataset(name, data_dir=cfg.data_dir, input_img_shape=cfg.input_img_shape,
                                     output_hm_shape=cfg.output_hm_shape, **options)
        loader = DataLoader(dataset, batch_size=cfg.test_batch_size,
                            sampler=ShardSampler(len(dataset), world.rank, world.world_size),
                            num_workers=cfg.num_thread, worker_init_fn=seed_worker,
                            generator=torch.Generator().manual_seed(cfg.seed), pin_memory=world.device.type == "cuda")
        regressor = getattr(dataset, "h36m_regressor", None)
        if regressor is None:
            if default_regressor is None:
                default_regressor = build_h36m_regressor(cfg, num_verts)
            regressor = default_regressor
        sets[name] = TestSet(loader, len(dataset), regressor)
    return sets
