import argparse
import math

import pytest
import yaml

from main.config import Config, ConfigError, add_config_args, config_from_args, load_config, save_config


def test_defaults_are_the_official_run():
    # Numbers typed from docs/SPEC.md 1.1 (model constants), 4.1 (stage 1 effective values), 3.3 (InfoNCE).
    cfg = Config()
    assert cfg.resnet_type == 50
    assert cfg.input_img_shape == (256, 256)
    assert cfg.output_hm_shape == (64, 64, 64)
    assert cfg.sigma == 2.5
    assert cfg.focal == (5000.0, 5000.0)
    assert cfg.princpt == (128.0, 128.0)
    assert cfg.camera_3d_size == 2.5
    assert cfg.bbox_3d_size == 2.0
    assert (cfg.enc_layers, cfg.dec_layers) == (2, 4)
    assert (cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.voxel_dim_feedforward) == (256, 8, 2048, 1024)
    assert cfg.dropout == 0.1
    assert cfg.pose_head == "vposer"
    assert cfg.input_joint_mask_prob == 0.1
    assert cfg.render is False
    assert cfg.trainset_3d == ["Human36M", "MuCo"]
    assert cfg.trainset_2d == ["CrowdPose", "MSCOCO"]
    assert cfg.testsets == ["3dpw", "3dpw-crowd", "3dpw-pc", "3dpw-oc"]
    assert cfg.update_bbox is True
    assert (cfg.train_batch_size, cfg.test_batch_size) == (32, 32)
    assert (cfg.lr, cfg.lr_backbone, cfg.weight_decay) == (1e-4, 1e-4, 1e-4)
    assert (cfg.lr_dec_epoch, cfg.lr_dec_factor, cfg.end_epoch) == ([17], 1.0, 18)
    assert (cfg.total_steps, cfg.max_norm, cfg.init_scale, cfg.seed) == (0, 0.0, 1024.0, 42)
    assert cfg.with_contrastive is False
    assert (cfg.intra_weight, cfg.inter_weight, cfg.nce_temperature) == (0.1, 0.1, 0.07)
    assert (cfg.intra_anchors, cfg.intra_positives, cfg.intra_negatives) == (100, 128, 256)
    assert (cfg.inter_anchors, cfg.inter_positives, cfg.inter_negatives) == (100, 1024, 2048)
    assert (cfg.amp, cfg.device, cfg.eval_every_steps) == ("off", "auto", 0)


def test_default_camera_gives_the_official_depth_scale():
    # spec 1.1: k = sqrt(fx * fy * camera_3d_size^2 / (H * W)) = 48.828125
    cfg = Config()
    (h, w), (fx, fy) = cfg.input_img_shape, cfg.focal
    assert math.sqrt(fx * fy * cfg.camera_3d_size**2 / (h * w)) == 48.828125


def test_default_lists_are_not_shared_between_instances():
    a, b = Config(), Config()
    a.trainset_2d.append("MPII")
    assert b.trainset_2d == ["CrowdPose", "MSCOCO"]


def test_main_train_preset_holds_the_effective_stage1_values(repo_root):
    cfg = load_config(repo_root / "main/configs/main_train.yaml")
    assert (cfg.lr, cfg.lr_backbone, cfg.weight_decay) == (1e-4, 1e-4, 1e-4)  # CLI values, not the yaml's 0.01
    assert (cfg.end_epoch, cfg.lr_dec_epoch, cfg.lr_dec_factor) == (18, [17], 1.0)
    assert cfg.train_batch_size == 32
    assert (cfg.enc_layers, cfg.dec_layers) == (2, 4)
    assert cfg.with_contrastive is False
    assert cfg.update_bbox is True
    assert cfg.init_ckpt == ""
    assert isinstance(cfg.lr, float) and isinstance(cfg.lr_dec_factor, float)


def test_fine_tune_preset_holds_the_effective_stage2_values(repo_root):
    cfg = load_config(repo_root / "main/configs/fine_tune.yaml")
    assert cfg.with_contrastive is True
    assert (cfg.intra_weight, cfg.inter_weight) == (0.1, 0.1)
    assert cfg.total_steps == 10000
    assert (cfg.lr, cfg.lr_backbone, cfg.weight_decay) == (5e-5, 5e-5, 1e-3)
    assert cfg.train_batch_size == 16
    assert (cfg.end_epoch, cfg.lr_dec_epoch) == (20, [99])
    assert cfg.eval_every_steps == 200
    stage1 = load_config(repo_root / "main/configs/main_train.yaml")
    assert cfg.init_ckpt == f"{stage1.output_dir}/{stage1.exp_name}/checkpoint/last.pth.tar"
    assert cfg.exp_name != stage1.exp_name  # the two stages must not share a checkpoint directory (spec 7.5)


def test_preset_by_name_is_the_file_in_main_configs(repo_root):
    assert load_config("fine_tune") == load_config(repo_root / "main/configs/fine_tune.yaml")


def test_missing_preset_lists_the_available_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"not found.*fine_tune.*main_train"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_parse_typed_values():
    cfg = load_config(overrides=[
        "lr=5e-5",  # YAML 1.1 reads this as the string '5e-5'
        "weight_decay=0.001",
        "end_epoch=3",
        "total_steps=1e4",
        "lr_dec_epoch=[5, 10]",
        "with_contrastive=true",
        "input_img_shape=[128, 96]",
        "focal=[1000, 1200]",
        "trainset_2d=[MSCOCO]",
        "testsets=3dpw-oc",
        "amp=off",  # YAML reads off as False; string fields take the text as typed
        "exp_name=2024",
        "init_ckpt=",
        "device=cpu",
        "loss_multipliers={smpl_shape: 1e-1, body_joint_cam: 2}",
    ])
    assert cfg.lr == 5e-5 and isinstance(cfg.lr, float)
    assert cfg.weight_decay == 0.001
    assert cfg.end_epoch == 3 and isinstance(cfg.end_epoch, int)
    assert cfg.total_steps == 10000 and isinstance(cfg.total_steps, int)
    assert cfg.lr_dec_epoch == [5, 10]
    assert cfg.with_contrastive is True
    assert cfg.input_img_shape == (128, 96)
    assert cfg.focal == (1000.0, 1200.0) and all(isinstance(v, float) for v in cfg.focal)
    assert cfg.trainset_2d == ["MSCOCO"]
    assert cfg.testsets == ["3dpw-oc"]
    assert cfg.amp == "off"
    assert cfg.exp_name == "2024"
    assert cfg.init_ckpt == ""
    assert cfg.device == "cpu"
    assert cfg.loss_multipliers == {"smpl_shape": 0.1, "body_joint_cam": 2.0}
    assert all(isinstance(v, float) for v in cfg.loss_multipliers.values())


def test_overrides_beat_the_preset_and_the_last_override_wins():
    cfg = load_config("fine_tune", ["lr=1e-3", "train_batch_size=8", "train_batch_size=4"])
    assert cfg.lr == 1e-3
    assert cfg.train_batch_size == 4
    assert cfg.total_steps == 10000  # untouched preset value


def test_direct_construction_coerces_like_a_preset():
    cfg = Config(focal=[1000, 1000], lr=1, lr_dec_epoch=(3,))
    assert cfg.focal == (1000.0, 1000.0)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.lr_dec_epoch == [3]


def test_unknown_override_key_names_the_closest_key_and_the_source():
    with pytest.raises(ConfigError, match=r"command line.*'weight_decy'.*did you mean 'weight_decay'"):
        load_config(overrides=["weight_decy=0.1"])


def test_unknown_preset_key_names_the_closest_key_and_the_file(tmp_path):
    preset = tmp_path / "typo.yaml"
    preset.write_text("lr: 1.0e-4\nlr_backbon: 1.0e-4\n")
    with pytest.raises(ConfigError) as info:
        load_config(preset)
    assert "typo.yaml" in str(info.value)
    assert "'lr_backbon'" in str(info.value) and "did you mean 'lr_backbone'" in str(info.value)


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="expected key=value, got 'lr'"):
        load_config(overrides=["lr"])


@pytest.mark.parametrize("override, words", [
    ("amp=fp8", ["amp", "fp8", "bf16"]),
    ("resnet_type=42", ["resnet_type", "42", "152"]),
    ("pose_head=axis_angle", ["pose_head", "rot6d"]),
    ("end_epoch=abc", ["end_epoch", "int", "abc"]),
    ("end_epoch=2.5", ["end_epoch", "int"]),
    ("lr=-1", ["lr", "> 0"]),
    ("dropout=1.5", ["dropout", "[0, 1)"]),
    ("with_contrastive=maybe", ["with_contrastive", "bool"]),
    ("input_img_shape=[256, 256, 3]", ["input_img_shape", "2 values"]),
    ("nheads=7", ["hidden_dim", "nheads"]),
    ("device=gpu", ["device", "gpu"]),
    ("lr_dec_epoch=[10, 5]", ["lr_dec_epoch", "increasing"]),
    ("loss_multipliers=[1, 2]", ["loss_multipliers", "mapping"]),
    ("loss_multipliers={smpl_shape: -1}", ["loss_multipliers", ">= 0"]),
    ("loss_multipliers={smpl_shape: heavy}", ["loss_multipliers[smpl_shape]", "float"]),
    ("synthetic_occlusion_failures=true", ["synthetic_occlusion_failures", "synthetic_occlusion_prob > 0"]),
])
def test_bad_values_give_a_clear_error(override, words):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    message = str(info.value)
    assert message.startswith("command line")
    for word in words:
        assert word in message


def test_bad_preset_value_names_the_file(tmp_path):
    preset = tmp_path / "bad.yaml"
    preset.write_text("amp: off\n")  # YAML reads this as False
    with pytest.raises(ConfigError, match=r"bad\.yaml.*amp.*quote"):
        load_config(preset)


def test_preset_must_be_a_mapping(tmp_path):
    preset = tmp_path / "list.yaml"
    preset.write_text("- lr\n- 1\n")
    with pytest.raises(ConfigError, match="list.yaml.*mapping"):
        load_config(preset)


def test_save_then_load_round_trips(tmp_path):
    cfg = load_config("fine_tune", ["lr=3e-5", "focal=[1000, 1100]", "amp=bf16", "testsets=[3dpw]", "render=true",
                                    "loss_multipliers={smpl_pose: 0.5}"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(path) == cfg
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.yaml"]  # no temporary file left behind
    written = yaml.safe_load(path.read_text())
    assert written["focal"] == [1000.0, 1100.0] and written["amp"] == "bf16"


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "config.yaml"
    save_config(load_config(overrides=["seed=1"]), path)
    save_config(load_config(overrides=["seed=2"]), path)
    assert load_config(path).seed == 2


def test_entry_point_arguments():
    parser = add_config_args(argparse.ArgumentParser())
    args = parser.parse_args(["--cfg", "main_train", "lr=2e-4", "end_epoch=1"])
    cfg = config_from_args(args)
    assert (cfg.exp_name, cfg.lr, cfg.end_epoch) == ("main_train", 2e-4, 1)
    assert config_from_args(parser.parse_args([])) == Config()


def test_occlusion_ablation_preset_is_stage_one_plus_occluders():
    stage1, ablation = load_config("main_train"), load_config("occlusion_aug")
    assert ablation.synthetic_occlusion_prob == 0.5 and stage1.synthetic_occlusion_prob == 0.0
    differing = {f for f in vars(stage1) if getattr(stage1, f) != getattr(ablation, f)}
    assert differing == {"synthetic_occlusion_prob", "exp_name"}


def test_presets_state_only_what_differs_from_the_defaults(repo_root):
    defaults = Config()
    for path in sorted((repo_root / "main" / "configs").glob("*.yaml")):
        values = yaml.safe_load(path.read_text())
        values.pop("base", None)
        same = sorted(k for k, v in values.items() if load_config(overrides=[f"{k}={v}"]) == defaults)
        assert not same, f"{path.name} repeats default values: {same}"


def test_a_preset_starts_from_its_base(tmp_path):
    (tmp_path / "parent.yaml").write_text("lr: 3.0e-4\nseed: 7\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nseed: 8\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.lr, cfg.seed) == (3e-4, 8)
    (tmp_path / "named.yaml").write_text("base: fine_tune\nseed: 9\n")  # a name in main/configs
    assert load_config(tmp_path / "named.yaml") == load_config("fine_tune", ["seed=9"])
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "typo.yaml").write_text("base: parent.yaml\nsed: 1\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*'sed'.*did you mean 'seed'"):
        load_config(tmp_path / "typo.yaml")


def test_principal_point_and_sigma_follow_the_crop_and_the_heatmap_grid():
    cfg = load_config(overrides=["input_img_shape=[128, 96]", "output_hm_shape=[32, 32, 32]"])
    assert cfg.princpt == (48.0, 64.0)  # (W/2, H/2)
    assert cfg.sigma == 1.25  # the official 2.5 heatmap pixels at 64^3, over the same crop
    assert load_config(overrides=["output_hm_shape=[32, 32, 32]", "sigma=2"]).sigma == 2.0  # given: kept
    with pytest.raises(ConfigError, match=r"command line: .*princpt must be the crop centre.*\(64\.0, 64\.0\)"):
        load_config(overrides=["input_img_shape=[128, 128]", "princpt=[128, 128]"])


def test_body_model_paths_follow_data_dir_unless_given():
    cfg = load_config(overrides=["data_dir=/datasets/jotr"])
    assert cfg.smpl_dir == "/datasets/jotr/body_models/smpl"
    assert cfg.j_regressor_h36m_path == "/datasets/jotr/body_models/J_regressor_h36m_correct.npy"
    assert cfg.vposer_path == "/datasets/jotr/body_models/vposer_v1_0"
    assert load_config(overrides=["data_dir=/x", "smpl_dir=/models/smpl"]).smpl_dir == "/models/smpl"
    stage2 = load_config("fine_tune", ["output_dir=/runs/a"])
    assert stage2.init_ckpt == "/runs/a/main_train/checkpoint/last.pth.tar"
