"""Energy networks: shapes at every resolution, multi-scale = sum of scales, conditioning, double backward."""

import pytest
import torch
import torch.nn.functional as F

from ebm_core.config import ConfigError, ModelConfig
from ebm_core.models import MultiScaleEnergy, ResNetEnergy, build_model, per_scale_energies


@pytest.mark.parametrize("res", [8, 12, 16, 32, 64, 128])
def test_any_square_resolution(res):
    m = ResNetEnergy(resolution=res, base_width=4, channel_mults=(1, 2, 2, 2), attention_res=8)
    assert m(torch.rand(2, 3, res, res)).shape == (2,)


def test_multiscale_energy_is_the_sum_of_its_scales():
    torch.manual_seed(0)
    m = build_model(ModelConfig(base_width=4, channel_mults=(1, 2)), resolution=16)
    assert isinstance(m, MultiScaleEnergy)
    x = torch.rand(3, 3, 16, 16)
    by_hand = m.nets[0](x) + m.nets[1](F.avg_pool2d(x, 2)) + m.nets[2](F.avg_pool2d(x, 4))
    torch.testing.assert_close(m(x), by_hand)
    torch.testing.assert_close(per_scale_energies(m, x).sum(1), by_hand)
    assert per_scale_energies(m, x).shape == (3, 3)
    assert not any(a is b for a, b in zip(m.nets[0].parameters(), m.nets[1].parameters()))


def test_multiscale_rejects_too_small_images():
    with pytest.raises(ConfigError, match="model.multiscale"):
        build_model(ModelConfig(), resolution=8)


def test_conditional_film_uses_labels():
    torch.manual_seed(0)
    m = ResNetEnergy(resolution=8, base_width=4, channel_mults=(1, 2), num_classes=(3, 2), attention_res=None)
    for p in m.parameters():  # FiLM starts at identity; perturb so labels matter
        torch.nn.init.normal_(p, std=0.3)
    x = torch.rand(2, 3, 8, 8)
    e_a = m(x, torch.tensor([[0, 1], [0, 1]]))
    e_b = m(x, torch.tensor([[2, 0], [2, 0]]))
    assert not torch.allclose(e_a, e_b)
    with pytest.raises(ValueError, match="conditional"):
        m(x)


def test_spectral_norm_and_attention_and_double_backward():
    m = ResNetEnergy(resolution=16, base_width=8, channel_mults=(1, 2), attention_res=8, spectral_norm=True,
                     norm="group", activation="leaky_relu")
    assert len(m.attn) == 1
    assert any("parametrizations" in n for n, _ in m.named_parameters())
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    (g,) = torch.autograd.grad(m(x).sum(), x, create_graph=True)
    (g.pow(2).sum()).backward()  # the L_opt path needs grad of an input gradient
    no_grad = [n for n, p in m.named_parameters() if p.grad is None]
    assert no_grad == ["head.bias"]  # the only parameter grad_x E does not depend on


def reference_count(f: int = 64, *, conditioning: bool = False, classes: int = 10) -> dict[str, int]:
    """Parameters of the authors' ResNetModel (filter_dim=f, norm, self_attn, multiscale), counted from its layer
    list: conv1; per block two 3x3 convs and two affine norms (+ conv_downsample on the second of a pair, + two
    Linear(classes, 2 width) latent maps that an unconditional model never uses); Self_Attn(2f); energy maps."""
    conv = lambda ci, co, k: ci * co * k * k + co  # noqa: E731
    block = lambda w: 2 * conv(w, w, 3) + 2 * 2 * w + (2 * (classes * 2 * w + 2 * w) if conditioning else 0)  # noqa: E731
    pair = lambda w, out: 2 * block(w) + conv(w, out, 3)  # noqa: E731
    pairs = [(f, f), (f, 2 * f), (2 * f, 4 * f), (4 * f, 8 * f)]
    attn = 2 * conv(2 * f, 2 * f // 8, 1) + conv(2 * f, 2 * f, 1) + 1
    scale = lambda n: conv(3, f, 3) + sum(pair(w, o) for w, o in pairs[:n]) + pairs[n - 1][1] + 1  # noqa: E731
    return {"full": scale(4) + attn, "half": scale(3), "quarter": scale(2)}


def test_cifar10_preset_is_the_reference_network():
    from ebm_core.models.reference import PairBlock
    from ebm_core.presets import get_preset

    m = build_model(get_preset("cifar10").model, resolution=32)
    ours = [sum(p.numel() for p in net.parameters()) for net in m.nets]
    ref = reference_count()
    assert ours == [ref["full"], ref["half"], ref["quarter"]] == [4_859_234, 1_295_809, 409_153]
    total, with_unused = sum(ours), sum(reference_count(conditioning=True).values())
    assert total == 6_564_196 and with_unused == 6_643_044  # the reference as built: 6.64 M, 78 848 of them unused
    assert abs(total - (with_unused - 78_848)) / total < 0.01
    # the stage shapes of the full-scale net at 32x32, and group norm in the 256-channel blocks
    shapes = []
    for b in m.nets[0].blocks:
        b.register_forward_hook(lambda mod, inp, out: shapes.append(tuple(out.shape[1:])))
    x = torch.rand(2, 3, 32, 32)
    assert m.energies(x).shape == (2, 3)
    assert shapes == [(64, 32, 32), (64, 16, 16), (64, 16, 16), (128, 8, 8), (128, 8, 8), (256, 4, 4),
                      (256, 4, 4), (512, 2, 2)]
    assert list(m.nets[0].attn) == ["1"] and m.nets[0].attn["1"].v.in_channels == 128  # after pair 2, at 8x8
    assert not m.nets[1].attn and not m.nets[2].attn
    norms = {type(b.norm1).__name__ for b in m.nets[0].blocks if isinstance(b, PairBlock) and b.conv1.in_channels == 256}
    assert norms == {"GroupNorm"} and m.nets[0].blocks[6].norm1.num_groups == 32
    assert type(m.nets[0].blocks[0].norm1).__name__ == "InstanceNorm2d" and m.nets[0].blocks[0].norm1.affine
    assert all(hasattr(b.conv1, "parametrizations") for b in m.nets[0].blocks)  # weight-standardised convs


def test_reference_multiscale_pools_as_the_reference_does():
    from ebm_core.presets import get_preset

    torch.manual_seed(0)
    m = build_model(get_preset("cifar10").model, resolution=32)
    x = torch.rand(2, 3, 32, 32)
    half = F.avg_pool2d(x, 3, stride=2, padding=1)
    by_hand = torch.stack([m.nets[0](x), m.nets[1](half), m.nets[2](F.avg_pool2d(half, 3, stride=2, padding=1))], 1)
    torch.testing.assert_close(m.energies(x), by_hand)
    torch.testing.assert_close(m(x), by_hand.sum(1))


def test_weight_standardisation_matches_its_formula():
    from ebm_core.models.reference import block_conv

    conv = block_conv(4, sn=False)
    w = conv.parametrizations.weight.original
    centred = w - w.mean(dim=(1, 2, 3), keepdim=True)
    expected = centred / (centred.flatten(1).std(dim=1).view(-1, 1, 1, 1) + 1e-5)
    torch.testing.assert_close(conv.weight, expected)
    torch.testing.assert_close(conv.weight.flatten(1).mean(1), torch.zeros(4), atol=1e-6, rtol=0)


def test_reference_network_conditional_and_spectral_norm():
    torch.manual_seed(0)
    cfg = ModelConfig(arch="reference", base_width=8, num_classes=(3, 2), spectral_norm=True, multiscale=False)
    m = build_model(cfg, resolution=16)
    for p in m.parameters():  # FiLM starts at identity; perturb so labels matter
        torch.nn.init.normal_(p, std=0.3)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    e_a, e_b = m(x, torch.tensor([[0, 1], [0, 1]])), m(x, torch.tensor([[2, 0], [2, 0]]))
    assert e_a.shape == (2,) and not torch.allclose(e_a, e_b)
    assert {type(b.conv1.parametrizations.weight[0]).__name__ for b in m.blocks} == {"_SpectralNorm"}
    (g,) = torch.autograd.grad(e_a.sum(), x, create_graph=True)
    g.pow(2).sum().backward()  # L_opt's double backward through every layer


def test_pair_block_adds_the_identity():
    """With its two convolutions zeroed, a block without downsampling is the identity (the residual path)."""
    from ebm_core.models.reference import PairBlock

    b = PairBlock(8, c_out=None, norm="instance", act="swish", sn=False, cond_dim=0)
    with torch.no_grad():
        for conv in (b.conv1, b.conv2):
            conv.parametrizations.weight.original.zero_()
            conv.bias.zero_()
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(b(x, None), x)


def test_unary_energy_is_the_mean_of_a_per_pixel_mlp():
    """E(x) = E_net(x) + mean_ij u(x_ij), u written out with the MLP's weights; the term starts at zero."""
    import copy

    torch.manual_seed(0)
    cfg = ModelConfig(base_width=4, channel_mults=(1, 2), attention_res=None, multiscale=False, activation="leaky_relu",
                      unary_width=5)
    m = build_model(cfg, resolution=8)
    x = torch.rand(3, 3, 8, 8)
    without = copy.deepcopy(m)
    without.unary = None
    torch.testing.assert_close(m(x), without(x))  # the last layer starts at zero: the term starts off
    for p in m.unary.parameters():
        torch.nn.init.normal_(p, std=0.5)
    (W1, b1), (W2, b2), (W3, b3) = [(c.weight.flatten(1), c.bias) for c in m.unary.mlp if isinstance(c, torch.nn.Conv2d)]
    pixels = x.permute(0, 2, 3, 1).reshape(3, 64, 3)  # (B, HW, C)
    u = F.leaky_relu(F.leaky_relu(pixels @ W1.T + b1, 0.2) @ W2.T + b2, 0.2) @ W3.T + b3  # (B, HW, 1)
    torch.testing.assert_close(m(x) - without(x), u.mean(dim=(1, 2)))


def test_unary_energy_is_only_for_the_small_network():
    with pytest.raises(ConfigError, match="model.unary_width"):
        ModelConfig(arch="reference", unary_width=8)
    with pytest.raises(ConfigError, match="model.unary_width"):
        ModelConfig(unary_width=-1)
