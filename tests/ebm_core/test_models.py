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
