"""The speed switches (common/speed/) must not change what the model computes, and the process settings must do
what they say."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.speed import FusedConv, fuse_conv_bn, set_channels_last
from main.build import build_model

REPO = Path(__file__).resolve().parent.parent


def random_inputs(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(batch, 3, 256, 256, generator=g)
    joints = 4 + 56 * torch.rand(batch, 30, 2, generator=g)
    mask = (torch.rand(batch, 30, 1, generator=g) > 0.15).float()
    return img, joints, mask


@pytest.fixture(scope="module")
def trained_bn_model(paper_cfg):
    """The paper model with non-trivial BN statistics and affine parameters (as after training), in eval mode."""
    torch.manual_seed(0)
    model = build_model(paper_cfg)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return model.eval()


def assert_same_outputs(a, b, atol):
    for key in ("joint_img", "joint_cam", "smpl_pose", "cam_trans", "smpl_mesh_cam"):
        torch.testing.assert_close(b[key], a[key], atol=atol, rtol=1e-4, msg=key)


def test_channels_last_computes_the_same_and_keeps_the_checkpoint_layout(trained_bn_model):
    img, joints, mask = random_inputs(2)
    with torch.no_grad():
        reference = trained_bn_model(img, joints, mask)
        keys = {k: v.shape for k, v in trained_bn_model.state_dict().items()}
        set_channels_last(trained_bn_model)
        try:
            assert trained_bn_model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
            assert {k: v.shape for k, v in trained_bn_model.state_dict().items()} == keys
            fast = trained_bn_model(img, joints, mask)
        finally:
            set_channels_last(trained_bn_model, False)
    assert trained_bn_model.backbone.conv1.weight.is_contiguous()
    assert_same_outputs(reference, fast, atol=1e-4)


def test_fused_batchnorm_computes_the_same_in_eval(paper_cfg, trained_bn_model):
    img, joints, mask = random_inputs(2, seed=1)
    fused = build_model(paper_cfg)
    fused.load_state_dict(trained_bn_model.state_dict())
    fuse_conv_bn(fused.eval())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        assert_same_outputs(trained_bn_model(img, joints, mask), fused(img, joints, mask), atol=1e-4)


def test_fusing_needs_eval_mode(paper_cfg):
    with pytest.raises(ValueError, match="eval"):
        fuse_conv_bn(build_model(paper_cfg).train())


@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "generic"])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_fused_conv_matches_conv_add_relu(onednn, relu, residual, layout):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1).to(memory_format=layout)
    x = torch.randn(2, 8, 12, 12).contiguous(memory_format=layout)
    other = torch.randn(2, 16, 6, 6).contiguous(memory_format=layout) if residual else None
    fused = FusedConv(conv, relu=relu)
    fused.onednn = onednn and fused.onednn
    expected = conv(x) + other if residual else conv(x)
    expected = expected.relu() if relu else expected
    with torch.no_grad():
        torch.testing.assert_close(fused(x, other), expected, atol=1e-5, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fused(x, other)
    assert low.dtype == torch.bfloat16  # the autocast rule for convolutions holds on the oneDNN path too
    torch.testing.assert_close(low.float(), expected, atol=0.05, rtol=0.02)


@pytest.mark.slow
def test_fused_model_under_bf16_autocast(paper_cfg, trained_bn_model):
    img, joints, mask = random_inputs(2, seed=3)
    fused = build_model(paper_cfg)
    fused.load_state_dict(trained_bn_model.state_dict())
    fuse_conv_bn(fused.eval())
    with torch.no_grad():
        exact = trained_bn_model(img, joints, mask)["joint_cam"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain, folded = trained_bn_model(img, joints, mask)["joint_cam"], fused(img, joints, mask)["joint_cam"]
    # bf16 rounding through a random ResNet-50 and transformer moves joints by centimetres; the folded model must
    # be about as close to the float32 result as the unfolded one (not off by a missed BN or a wrong dtype).
    err_plain, err_folded = (plain - exact).abs().mean(), (folded - exact).abs().mean()
    assert err_folded < 2 * err_plain + 1e-3, (err_folded, err_plain)


FAULTS_SCRIPT = """
import resource, sys, torch
from common.speed import setup_cpu_process
applied = setup_cpu_process(reuse_cpu_memory=sys.argv[1] == "on")
def step():  # 32 and 64 MiB activations, freed at once, like the ResNet stem's at batch 8 and 16
    for size in (8 * 2**20, 16 * 2**20, 8 * 2**20):
        torch.ones(size)
for _ in range(10):  # the heap grows over the first steps (freed blocks are not always adjacent), then settles
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _steady_state_faults(mode):
    result = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], cwd=REPO, capture_output=True, text=True,
                            check=True)
    applied, faults = result.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.slow
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc mallopt")
def test_reused_cpu_memory_is_not_page_faulted_again():
    applied, faults = _steady_state_faults("on")
    assert applied
    assert faults < 3 * 32768 * 0.1  # the freed blocks are reused: (almost) no fresh pages
    applied, faults = _steady_state_faults("off")
    assert not applied
    if "[always]" not in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text():
        # The default: each freed block went back to the kernel, and 3 x 128 MiB of 4 KiB pages are faulted in again.
        assert faults >= 3 * 32768 * 0.9


def test_cpu_process_setup_runs_numpy_blas_on_one_thread():
    # OpenBLAS's idle threads busy-wait after each call and would take a core from PyTorch's (common/speed/process.py).
    script = ("from threadpoolctl import threadpool_info\nfrom common.speed import setup_cpu_process\n"
              "setup_cpu_process(reuse_cpu_memory=False)\n"
              "print(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}))")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "2"})
    assert result.stdout.strip() == "[1]"


def test_inference_model_without_fusion_is_the_plain_model(trained_bn_model):
    from common.speed import inference_model

    assert inference_model(trained_bn_model, fuse=False) is trained_bn_model
    fused = inference_model(trained_bn_model)
    assert fused is not trained_bn_model and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trained_bn_model.modules())  # the original is untouched
