"""Speed tricks that leave the method unchanged, applied to a plain model from outside, each behind a config key:
fast CPU dropout and attention (`fast_cpu_dropout`, training), channels-last layout (`channels_last`), BN folding and
fused residual convolutions (`fast_inference`, evaluation and the demo), torch.compile (`compile`) and process-wide
CPU settings (`reuse_cpu_memory`). bf16 autocast is the `amp` key. `python -m tools.bench` reports each one's
effect."""
from common.speed.dropout import use_fast_cpu_dropout
from common.speed.fusion import FusedBlock, FusedConv, compile_model, fuse_conv_bn, inference_model
from common.speed.layout import set_channels_last
from common.speed.machine import machine_kind
from common.speed.process import keep_freed_memory, setup_cpu_process

__all__ = ["FusedBlock", "FusedConv", "compile_model", "fuse_conv_bn", "inference_model", "keep_freed_memory",
           "machine_kind", "set_channels_last", "setup_cpu_process", "use_fast_cpu_dropout"]
