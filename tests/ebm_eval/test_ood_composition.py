"""OOD table and composition bookkeeping on tiny models."""

import torch

from ebm_core.composition import AND
from ebm_core.config import DataConfig
from ebm_core.data import load_dataset
from ebm_core.models import ResNetEnergy
from ebm_core.presets import get_preset
from ebm_eval.composition import (attribute_view, composition_markdown, composition_table, conditioned,
                                  score_composition)
from ebm_eval.ood import embedded_ood_sets, ood_markdown, ood_table


def test_ood_table_has_every_set_both_scores_and_the_average():
    torch.manual_seed(0)
    model = ResNetEnergy(resolution=16, base_width=4, channel_mults=(1, 2), attention_res=None)
    test = load_dataset(DataConfig(name="shapes", resolution=16, num_train=200), split="test").images.float() / 255
    sets = embedded_ood_sets(test, res=16, channels=3, n=40)
    assert set(sets) == {"interpolations", "uniform_noise", "constant_colour", "textures", "digits"}
    assert all(x.shape == (40, 3, 16, 16) and 0 <= x.min() and x.max() <= 1 for x in sets.values())
    table = ood_table(model, test, sets)
    assert set(table) == set(sets) | {"average"}
    assert all(0 <= v <= 1 for row in table.values() for v in row.values())
    md = ood_markdown(table)
    assert "**Average**" in md and "-E(x)" in md and "-||grad_x E(x)||" in md


def test_composed_energy_is_the_sum_of_conditioned_models():
    torch.manual_seed(0)
    m1 = ResNetEnergy(resolution=8, base_width=4, channel_mults=(1,), attention_res=None, num_classes=(3,))
    m2 = ResNetEnergy(resolution=8, base_width=4, channel_mults=(1,), attention_res=None, num_classes=(6,))
    x, y1, y2 = torch.rand(5, 3, 8, 8), torch.randint(3, (5, 1)), torch.randint(6, (5, 1))
    e = AND([conditioned(m1, y1), conditioned(m2, y2)])
    torch.testing.assert_close(e(x), m1(x, y1) + m2(x, y2))


def test_score_composition_bookkeeping():
    pred = torch.tensor([[0, 1, 2], [0, 2, 2], [1, 1, 0], [0, 1, 2]])  # (N, A) over all attributes
    targets = torch.tensor([[0, 2], [0, 2], [0, 0], [1, 2]])  # conditioned on columns 0 and 2
    s = score_composition(pred, targets, [0, 2])
    assert s == {"acc/0": 0.5, "acc/1": 1.0, "all": 0.5}  # rows 1-2 right on both, 3 and 4 wrong on column 0


def test_composition_table_layout_on_tiny_models():
    cfg = get_preset("test").override({"generate.rounds": 0, "generate.steps": 1, "generate.settle_rounds": 1})
    data = load_dataset(cfg.data)
    order = ["shape", "colour"]
    models = {}
    for a in order:
        view = attribute_view(data, a)
        models[a] = ResNetEnergy(resolution=16, base_width=4, channel_mults=(1, 2), attention_res=None,
                                 num_classes=view.num_classes)
    def classify(x):  # a classifier that always answers class 0: accuracy is then the share of class-0 targets
        return torch.zeros(x.shape[0], len(data.label_names), dtype=torch.long)

    rows, grids = composition_table(models, order, data, classify, cfg, n=30)
    assert [r["attributes"] for r in rows] == [["shape"], ["shape", "colour"]]
    assert 0.15 < rows[0]["shape"] < 0.55 and rows[1]["all"] <= rows[1]["shape"]  # chance level of class 0
    assert grids[0].shape == (30, 3, 16, 16)
    md = composition_markdown(rows, order)
    assert "| Ours (shape & colour) |" in md and md.count("\n") == 3


class QuadraticBowl(torch.nn.Module):
    """E(x) = sign * ||x - c||^2 per image: low energy (likely) near c when sign = +1."""

    def __init__(self, centre: float, sign: float = 1.0) -> None:
        super().__init__()
        self.centre, self.sign = centre, sign

    def forward(self, x, y=None):
        return self.sign * (x - self.centre).flatten(1).pow(2).sum(1)


def test_ood_scores_have_the_right_sign():
    """In-distribution images sit at the bowl's bottom: -E(x) separates them perfectly (AUROC 1), the flipped energy
    inverts the ranking (AUROC 0), and -||grad E|| (zero at the bottom) also ranks them first."""
    g = torch.Generator().manual_seed(0)
    x_in = (0.3 + 0.02 * torch.randn(64, 3, 8, 8, generator=g)).clamp(0, 1)
    x_out = (0.7 + 0.02 * torch.randn(64, 3, 8, 8, generator=g)).clamp(0, 1)
    right = ood_table(QuadraticBowl(0.3), x_in, {"far": x_out})
    flipped = ood_table(QuadraticBowl(0.3, sign=-1.0), x_in, {"far": x_out})
    assert right["far"]["energy"] > 0.99 and flipped["far"]["energy"] < 0.01
    assert right["far"]["grad_norm"] > 0.99
