"""The fast CPU dropout (common/speed/dropout.py) installed on the transformer: the distribution of F.dropout, at a
lower cost, with the same module layout."""
import copy

import pytest
import torch
from torch import nn

from common.model.transformer import Attention
from common.speed.dropout import Dropout, attend, drop_mask, use_fast_cpu_dropout


def test_drop_mask_rate_and_independence():
    torch.manual_seed(0)
    mask = drop_mask((1000, 1000), 0.1, "cpu")
    # 1e6 Bernoulli(0.1) draws: standard error 3e-4.
    assert abs(mask.float().mean().item() - 0.1) < 2e-3
    # No pattern between neighbours (the 16-bit quarters of one 64-bit draw are independent).
    flat = mask.flatten().float()
    for lag in (1, 2, 3, 4):
        both = (flat[:-lag] * flat[lag:]).mean().item()
        assert abs(both - 0.01) < 1e-3, lag
    assert not torch.equal(mask, drop_mask((1000, 1000), 0.1, "cpu"))
    assert drop_mask((4, 5), 0.0, "cpu").sum() == 0 and drop_mask((4, 5), 1.0, "cpu").all()


def test_dropout_module_scales_kept_values_and_is_identity_in_eval():
    torch.manual_seed(1)
    layer = Dropout(0.25)
    x = torch.rand(200, 300) + 1.0
    y = layer(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert abs(1 - kept.float().mean().item() - 0.25) < 0.01
    assert torch.equal(layer.eval()(x), x)
    assert isinstance(layer, torch.nn.Dropout) and layer.state_dict() == {}  # the same module layout as before


def test_attention_training_path_matches_the_fused_kernel():
    torch.manual_seed(2)
    # Trains through the explicit path; p rounds to no dropped weights.
    attention = use_fast_cpu_dropout(Attention(32, 4, dropout=1e-9))
    q, kv = torch.randn(2, 7, 32), torch.randn(2, 11, 32)
    explicit = attention.train()(q, kv, kv)
    fused = attention.eval()(q, kv, kv)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)


def test_attention_without_dropout_trains_through_explicit_products_with_the_fused_gradients(monkeypatch):
    torch.manual_seed(4)
    plain = Attention(32, 4, dropout=0.0).train()
    fast = use_fast_cpu_dropout(copy.deepcopy(plain))
    q, kv = torch.randn(3, 9, 32, requires_grad=True), torch.randn(3, 27, 32, requires_grad=True)
    plain(q, kv, kv).square().sum().backward()
    expected = [t.grad.clone() for t in (q, kv, *plain.parameters())]
    q.grad = kv.grad = None
    # The fused kernel's CPU backward is what the explicit products replace in training: it must not be called.
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", None)
    fast(q, kv, kv).square().sum().backward()
    for want, got in zip(expected, [t.grad for t in (q, kv, *fast.parameters())], strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_attention_dropout_keeps_the_expected_output():
    torch.manual_seed(3)
    attention = use_fast_cpu_dropout(Attention(16, 2, dropout=0.5)).train()
    q, kv = torch.randn(1, 3, 16), torch.randn(1, 5, 16)
    with torch.no_grad():
        runs = torch.stack([attention(q, kv, kv) for _ in range(4000)])
        reference = attention.eval()(q, kv, kv)
    # Inverted dropout: the mean over masks is the output without dropout (the output projection is linear).
    torch.testing.assert_close(runs.mean(0), reference, atol=0.03, rtol=0.0)
    assert runs.std(0).mean() > 0.05  # and the masks do vary


def test_fast_dropout_is_installed_from_outside_with_the_same_state():
    layers = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.3), Attention(4, 2, dropout=0.3))
    keys = list(layers.state_dict())
    assert layers[2].attend is torch.nn.functional.scaled_dot_product_attention  # the plain model
    use_fast_cpu_dropout(layers)
    assert type(layers[1]) is Dropout and layers[1].p == 0.3 and layers[2].attend is attend
    assert list(layers.state_dict()) == keys
