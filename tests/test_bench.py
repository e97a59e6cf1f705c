"""tools/bench.py: a small section writes a valid bench.json (fast); every section runs (--quick) and stores the numbers
its tables print (slow); the FLOP counter and the peak-memory probe agree with independent computations."""
import json
import math
import platform
import statistics
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.model.backbone import RESNET_BLOCKS
from main.config import load_config
from tools import bench

# One thread: the tests check function, not speed, and two threads on a busy two-core machine are many times slower.
QUICK = ["--quick", "--threads", "1", "--steps", "2", "--warmup", "1"]
CRITERIA = ["forward_fp32_fraction_of_ceiling", "forward_bf16_speedup", "forward_bf16_fraction_of_bf16_ceiling",
            "train_step_fraction_of_ceiling", "train_step_bf16_fraction_of_bf16_ceiling",
            "contrastive_step_ratio", "data_worker_vs_train_step", "embedded_step_fraction_of_ceiling"]


def positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """All sections, --quick, with --profile: (returned report, report read back from the json file)."""
    path = tmp_path_factory.mktemp("bench") / "out" / "bench.json"
    torch_threads = torch.get_num_threads()
    try:
        report = bench.main(QUICK + ["--profile", "--output", str(path)])
    finally:
        torch.set_num_threads(torch_threads)
    return report, json.loads(path.read_text())


def test_one_small_section_writes_a_readable_report(tmp_path):
    """What `make bench --sections eval` leaves behind: the json a user reads, with the section's numbers and every
    target listed, those whose sections did not run marked as not measured."""
    path = tmp_path / "out" / "bench.json"
    torch_threads = torch.get_num_threads()
    try:
        report = bench.main(QUICK + ["--sections", "eval", "--output", str(path)])
    finally:
        torch.set_num_threads(torch_threads)
    stored = json.loads(path.read_text())
    assert stored == json.loads(json.dumps(report))
    assert list(stored["sections"]) == ["eval"]
    assert positive(stored["sections"]["eval"]["samples_per_s"])
    assert [c["name"] for c in stored["acceptance"]] == CRITERIA
    assert all(c["value"] is None and c["pass"] is None for c in stored["acceptance"])
    assert not list(path.parent.glob(".bench.json.*"))  # written atomically: no temporary file left


@pytest.mark.slow
def test_json_holds_every_section_and_the_acceptance_block(full_run):
    report, stored = full_run
    assert stored == json.loads(json.dumps(report))
    assert list(stored["sections"]) == list(bench.SECTIONS)
    assert stored["quick"] is True and stored["threads"] == 1 and stored["batch"] == 2
    # Like the entry points, the benchmark keeps freed memory for reuse where the C library allows it.
    assert stored["reuse_cpu_memory"] is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert [c["name"] for c in stored["acceptance"]] == CRITERIA
    assert set(stored["cpu"]["isa"]) == {"AVX2", "AVX-512", "AVX-512 BF16", "AMX", "AMX BF16"}
    assert stored["cpu"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.slow
def test_machine_ceilings(full_run):
    machine = full_run[1]["sections"]["machine"]
    for dtype in ("float32", "bfloat16"):
        entry = machine["matmul"][dtype]
        assert sorted(int(s) for s in entry["gflops_by_size"]) == sorted(bench.QUICK_MATMUL_SIZES)
        assert all(positive(v) for v in entry["gflops_by_size"].values())
        assert entry["best_gflops"] == max(entry["gflops_by_size"].values())
        assert entry["gflops_by_size"][str(entry["best_size"])] == entry["best_gflops"]
    assert machine["copy_bytes"] == bench.QUICK_COPY_MB * 2**20
    assert machine["memory_bandwidth_gbs"] == pytest.approx(2 * machine["copy_bytes"] / machine["copy_s"] / 1e9)


@pytest.mark.slow
def test_forward_rows(full_run):
    sections = full_run[1]["sections"]
    forward, ceiling = sections["forward"], sections["machine"]["matmul"]["float32"]["best_gflops"]
    keys = {(r["batch"], r["dtype"], r["switches"]) for r in forward["rows"]}
    expected = {(2, d, s) for d in ("float32", "bfloat16") for s in bench.SWITCHES}
    expected |= {(1, d, bench.INFERENCE_SWITCHES) for d in ("float32", "bfloat16")}
    assert keys == expected and len(forward["rows"]) == len(expected)
    for batch in ("1", "2"):
        flops = forward["flops_per_image"][batch]
        assert positive(flops["conv"]) and flops["conv"] < flops["total"]
    assert forward["flops_per_image"]["1"]["total"] == pytest.approx(forward["flops_per_image"]["2"]["total"])
    for row in forward["rows"]:
        assert len(row["times_s"]) == 2 and all(positive(t) for t in row["times_s"])
        assert row["median_s"] == pytest.approx(statistics.median(row["times_s"]))
        assert row["images_per_s"] == pytest.approx(row["batch"] / row["median_s"])
        per_image = forward["flops_per_image"][str(row["batch"])]["total"]
        assert row["gflops"] == pytest.approx(per_image * row["images_per_s"] / 1e9)
        assert row["fraction_of_fp32_ceiling"] == pytest.approx(row["gflops"] / ceiling)
    rows = {(r["batch"], r["dtype"], r["switches"]): r for r in forward["rows"]}
    fp32, bf16 = (rows[(2, d, bench.INFERENCE_SWITCHES)]["times_s"] for d in ("float32", "bfloat16"))
    assert forward["bf16_speedup"]["value"] == pytest.approx(statistics.median(a / b for a, b in zip(fp32, bf16)))
    assert forward["bf16_products"] == bench.bf16_products(torch.device("cpu"))
    # --profile: the inference forward in both dtypes; its BatchNorm is folded into the convolutions.
    assert set(forward["profile"]) == {"float32", "bfloat16"}
    for profile in forward["profile"].values():
        assert profile["ms"]["convolution"] > 0 and profile["ms"]["batch norm"] == 0
        assert profile["optimizer_step_ms"] == 0


@pytest.mark.slow
def test_train_step_variants(full_run):
    sections = full_run[1]["sections"]
    train = sections["train_step"]
    layout = "channels_last" if bench.TRAIN_CHANNELS_LAST else "plain"
    # The bf16 step is timed where the CPU computes bf16 products, as main.train's amp=bf16 runs it.
    bf16 = f"{layout} bf16"
    with_bf16 = bench.bf16_products(torch.device("cpu"))
    expected = {"plain", "channels_last", f"{layout}+contrastive"} | ({bf16} if with_bf16 else set())
    assert set(train["variants"]) == expected
    assert (train["bf16"] is not None) == with_bf16
    if with_bf16:
        bf16_times = train["variants"][bf16]["all_wall_s"]
        assert train["bf16"]["step_s"] == train["variants"][bf16]["wall_s"]
        assert len(train["bf16"]["reference_gflops"]) == len(bf16_times)
        assert train["bf16"]["paired_fraction"] == pytest.approx(statistics.median(
            3 * train["forward_flops_per_image"] * train["batch"] / t / 1e9 / r
            for t, r in zip(bf16_times, train["bf16"]["reference_gflops"])))
        assert train["bf16"]["speedup"] == pytest.approx(statistics.median(
            a / b for a, b in zip(train["variants"][layout]["all_wall_s"], bf16_times)))
    for variant in train["variants"].values():
        assert variant["wall_s"] == pytest.approx(statistics.median(variant["all_wall_s"]))
        assert variant["images_per_s"] == pytest.approx(train["batch"] / variant["wall_s"])
        if platform.system() == "Linux":
            assert positive(variant["peak_memory_mb"])
    main_variant = train["variants"][layout]
    with_nce = train["variants"][f"{layout}+contrastive"]
    assert train["step_s"] == main_variant["wall_s"] and train["images_per_s"] == main_variant["images_per_s"]
    assert train["ratio"] == pytest.approx(statistics.median(
        b / a for a, b in zip(main_variant["all_wall_s"], with_nce["all_wall_s"])))
    step_flops = 3 * train["forward_flops_per_image"] * train["batch"]
    assert train["gflops"] == pytest.approx(step_flops / train["step_s"] / 1e9)
    # The train-mode forward computes what the eval-mode forward computes.
    assert train["forward_flops_per_image"] == pytest.approx(sections["forward"]["flops_per_image"]["2"]["total"])
    assert positive(train["contrastive_loss_only_s"])
    # --profile: each timed dtype's step broken down, its convolutions' and products' rates from the step's FLOPs.
    assert set(train["profile"]) == {"float32"} | ({"bfloat16"} if with_bf16 else set())
    for profile in train["profile"].values():
        assert profile["ms"]["convolution"] > 0 and profile["optimizer_step_ms"] > 0
        assert set(profile["fraction_of_ceiling"]) == {"convolution", "matrix products"}


@pytest.mark.slow
def test_embedded_step_runs_the_presets_step(full_run):
    step = full_run[1]["sections"]["embedded_step"]
    # make demo's configuration: its network and amp dtype (the batch is --batch under --quick).
    assert (step["preset"], step["amp"], step["ceiling_dtype"], step["batch"]) == ("embedded", "bf16", "bfloat16", 2)
    preset = load_config("embedded")
    assert step["model"]["resnet_type"] == preset.resnet_type
    assert step["model"]["input_img_shape"] == list(preset.input_img_shape)
    assert step["model"]["hidden_dim"] == preset.hidden_dim
    assert step["step_s"] == pytest.approx(statistics.median(step["all_step_s"]))
    assert len(step["reference_gflops"]) == len(step["all_step_s"]) == 2
    # The convolutions timed alone: every one of the network's, with the FLOPs of forward and backward (no gradient
    # for the image), which sum to the forward count's convolution FLOPs times 3 less the image's gradient.
    convs = step["convolutions"]
    names = [row["name"] for row in convs["rows"]]
    last_conv = f"backbone.layer4.{RESNET_BLOCKS[preset.resnet_type][1][3] - 1}.conv2"  # of the preset's depth
    assert "backbone.conv1" in names and last_conv in names and "pose2feat.conv.0" in names
    assert len(names) == len(set(names))
    first = convs["rows"][names.index("backbone.conv1")]
    assert first["input_shape"] == [2, 3, *preset.input_img_shape]
    assert convs["flops"] == sum(row["flops"] for row in convs["rows"])
    assert convs["flops"] == 3 * step["forward_conv_flops"] - first["flops"] / 2
    assert convs["seconds"] == pytest.approx(sum(row["seconds"] for row in convs["rows"]))
    assert all(positive(row["seconds"]) and positive(row["fraction_of_ceiling"]) for row in convs["rows"])
    # Convolutions at the ceiling can only raise the step's fraction.
    assert convs["step_fraction_with_convolutions_at_ceiling"] > step["fraction_of_ceiling"] * 0.999
    assert step["profile"]["ms"]["convolution"] > 0 and step["profile"]["optimizer_step_ms"] > 0


def test_data_and_eval_throughput(full_run):
    sections = full_run[1]["sections"]
    data = sections["data"]
    for name in ("muco", "pw3d"):
        entry = data[name]
        assert entry["items"] >= 1 and entry["pass_s"] == pytest.approx(statistics.median(entry["all_pass_s"]))
        assert entry["samples_per_s"] == pytest.approx(entry["items"] / entry["pass_s"])
        assert positive(entry["samples_per_cpu_s"])
    assert data["muco"]["items"] == bench.QUICK_DATA_SIZES["n_train"]  # one sample per MuCo image
    assert positive(data["generator"]["images_per_second"])
    evaluation = sections["eval"]
    assert evaluation["batch"] == bench.QUICK_EVAL_BATCH and evaluation["vertices"] == 6890
    assert evaluation["samples_per_s"] == pytest.approx(evaluation["batch"] / evaluation["median_s"])


@pytest.mark.slow
def test_sections_subset_runs_in_canonical_order(tmp_path):
    torch_threads = torch.get_num_threads()
    try:
        report = bench.main(QUICK + ["--sections", "eval,forward", "--output", str(tmp_path / "b.json")])
    finally:
        torch.set_num_threads(torch_threads)
    assert list(report["sections"]) == ["forward", "eval"]
    # Without the machine section there is no ceiling to compare with.
    assert all(row["fraction_of_fp32_ceiling"] is None for row in report["sections"]["forward"]["rows"])
    # The forward section times its own reference matmul, so the two paired forward criteria are measured; those
    # needing the machine's bf16 ceiling, the train_step or the data sections are not.
    measured = {c["name"]: c["pass"] is not None for c in report["acceptance"]}
    assert measured == {name: name in ("forward_fp32_fraction_of_ceiling", "forward_bf16_speedup") for name in CRITERIA}


@pytest.mark.parametrize("sections", ["nope", "machine,nope", ","])
def test_bad_sections_exit_with_an_error(tmp_path, capsys, sections):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--quick", "--sections", sections, "--output", str(tmp_path / "b.json")])
    assert exit_info.value.code == 2
    assert "--sections" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_flop_count_matches_the_analytic_count():
    torch.manual_seed(0)
    conv, linear = nn.Conv2d(3, 8, kernel_size=3, padding=1), nn.Linear(8 * 6 * 6, 5)
    image = torch.rand(2, 3, 6, 6)
    # Equal head sizes: the case CPUs run with the fused attention kernel, which needs bench's own formula.
    query, key, value = torch.rand(2, 3, 5, 8), torch.rand(2, 3, 7, 8), torch.rand(2, 3, 7, 8)

    def run():
        linear(torch.relu(conv(image)).flatten(1))
        F.scaled_dot_product_attention(query, key, value)

    conv_macs = 2 * (8 * 6 * 6) * (3 * 3 * 3)  # batch x output elements x (input channels x kernel area)
    linear_macs = 2 * (8 * 6 * 6) * 5
    attention_macs = 2 * 3 * 5 * 7 * 8 + 2 * 3 * 5 * 7 * 8  # Q K^T, then softmax(.) V
    with torch.no_grad():
        flops = bench.count_flops(run)
    assert flops == {"total": 2 * (conv_macs + linear_macs + attention_macs), "conv": 2 * conv_macs,
                     "attention": 2 * attention_macs}


def test_profile_breaks_a_call_down_by_kind_of_work():
    """--profile's breakdown (what a profile of an unmet target on a new machine rests on): a call of known
    convolution and product work lands in those categories, the per-category times add up to the profiled total,
    and the fraction of the ceiling follows from the FLOPs given."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, kernel_size=3, padding=1)
    image, a, b = torch.rand(4, 16, 32, 32), torch.rand(64, 64), torch.rand(64, 64)

    def run():
        with torch.no_grad():
            conv(image)
            torch.mm(a, b)
            (a * 2).to(torch.float64)

    profile = bench.profile_breakdown(run, 2, {"convolution": 4e6, "matrix products": 2 * 64**3}, ceiling=100.0)
    ms = profile["ms"]
    assert set(ms) == {category for category, _ in bench.PROFILE_CATEGORIES} | {"other"}
    assert ms["convolution"] > 0 and ms["matrix products"] > 0 and ms["copies and casts"] > 0
    assert ms["batch norm"] == ms["fused attention"] == 0
    assert profile["profiled_ms"] == pytest.approx(sum(ms.values()))
    assert profile["fraction_of_ceiling"]["convolution"] == pytest.approx(4e6 / (ms["convolution"] / 1e3) / 1e9 / 100)
    assert profile["optimizer_step_ms"] == 0
    assert bench._profile_category("aten::convolution_backward") == "convolution"
    assert bench._profile_category("aten::mm") == "matrix products"
    assert bench._profile_category("aten::mm_out_something") == "other"  # matrix products by exact name only


@pytest.mark.skipif(platform.system() != "Linux", reason="the CPU peak-memory probe reads /proc")
def test_peak_memory_sees_reused_heap_memory():
    """A 16 MiB buffer allocated and freed several times comes from memory glibc kept after the first free; the probe
    must still see it (the reason it returns freed memory to the system first)."""
    def allocate():
        torch.ones(4 * 2**20).sum()  # 16 MiB of float32

    for _ in range(3):
        allocate()
    assert bench.peak_memory_mb(allocate, torch.device("cpu")) == pytest.approx(16, abs=2)
    assert bench.peak_memory_mb(lambda: None, torch.device("cpu")) == pytest.approx(0, abs=2)


def test_checkpoint_section(full_run):
    checkpoint = full_run[1]["sections"]["checkpoint"]
    # The weights plus AdamW's two moments of the trainable ones (not the frozen VPoser), 4 bytes each.
    assert checkpoint["size_mb"] * 2**20 >= 4 * checkpoint["parameters"] + 8 * checkpoint["trainable_parameters"]
    assert positive(checkpoint["save_median_s"]) and positive(checkpoint["load_median_s"])
    assert checkpoint["save_median_s"] == statistics.median(checkpoint["save_all_s"])
    assert not Path(checkpoint["path"]).exists()  # the benchmark removes its file
