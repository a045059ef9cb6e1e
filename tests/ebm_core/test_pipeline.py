"""Generation's inputs: a conditional model's labels, the channel count a stored model was trained on, and the
transitions' crops."""

import pytest
import torch

from ebm_core.config import ConfigError
from ebm_core.data import ImageSet
from torch import Tensor, nn

from ebm_core.pipeline import draw_labels, generate, load_model
from ebm_core.presets import get_preset
from ebm_core.trainer import Trainer


def test_draw_labels_follows_the_datas_label_frequencies():
    """A conditional model's labels are the data's own rows, at the data's frequencies (p(y) of sum_y p(y) p(x|y))."""
    labels = torch.tensor([[0, 1]] * 90 + [[1, 2]] * 10)  # two label rows, 9 : 1
    data = ImageSet(torch.zeros(100, 1, 4, 4, dtype=torch.uint8), labels, (2, 3), ("a", "b"), "toy")
    torch.manual_seed(0)
    y = draw_labels(data, 20_000)
    assert y.shape == (20_000, 2) and y.dtype == torch.int64
    assert {tuple(r) for r in y.tolist()} == {(0, 1), (1, 2)}  # only the data's rows: attributes never mixed
    assert (y[:, 0] == 0).double().mean().item() == pytest.approx(0.9, abs=0.01)  # binomial sd 0.002


def test_load_model_says_how_many_channels_to_generate(tmp_path):
    """A greyscale model's config comes back with data.channels = 1, so generate() draws one-channel chains."""
    cfg = get_preset("test").override({"data.name": "digits", "data.channels": None, "train.run_dir": str(tmp_path)})
    trainer = Trainer(cfg)
    trainer.step()
    model, loaded = load_model(trainer.save_checkpoint())
    assert cfg.data.channels is None and loaded.data.channels == 1
    x = generate(model, loaded.override({"generate.num_samples": 2}), channels=loaded.data.channels)
    assert x.shape == (2, 1, 16, 16)


class Flat(nn.Module):
    """E(x) = 0: Langevin steps without noise leave x where it is, so generation shows its transitions alone."""

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return (x * 0).sum(dim=(1, 2, 3))


def test_generation_crops_follow_generate_crop_scale():
    """Algorithm 2's crops are ``generate.crop_scale`` where set, else the training transitions' ``augment.crop_scale``:
    with whole-image crops for generation (and no flip or jitter) one round returns the start unchanged, while the
    training crops (0.6-1) move it."""
    cfg = get_preset("test").override({"augment.crop_scale": [0.6, 1.0], "augment.flip": False, "augment.jitter_p": 0.0,
                                       "augment.grayscale_p": 0.0, "generate.rounds": 1, "generate.steps": 1,
                                       "generate.settle_rounds": 0, "generate.noise": 0.0})
    torch.manual_seed(0)
    x0 = torch.rand(4, 3, 16, 16)
    outputs = {}
    for crop in (None, [1.0, 1.0]):
        torch.manual_seed(0)  # generate's first draw is the same start x0
        outputs[str(crop)] = generate(Flat(), cfg.override({"generate.crop_scale": crop}), num_samples=4)
    torch.testing.assert_close(outputs["[1.0, 1.0]"], x0)
    assert (outputs["None"] - x0).abs().amax(dim=(1, 2, 3)).min() > 0.05  # every chain cropped


def test_a_conditional_model_is_generated_with_labels_drawn_from_labels_from():
    """generate() draws a conditional model's labels from ``labels_from`` (as ``draw_labels`` would, with the same
    random stream), refuses a conditional model given neither, and gives an unconditional model none."""
    seen = []

    class Spy(Flat):
        def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
            seen.append(labels)
            return super().forward(x)

    data = ImageSet(torch.zeros(3, 3, 16, 16, dtype=torch.uint8), torch.tensor([[0, 1], [2, 5], [1, 3]]), (3, 6),
                    ("shape", "colour"), "toy")
    cfg = get_preset("test").override({"model.num_classes": [3, 6], "generate.rounds": 1, "generate.steps": 1,
                                       "generate.settle_rounds": 0})
    torch.manual_seed(0)
    expected = draw_labels(data, 5)
    torch.manual_seed(0)
    generate(Spy(), cfg, num_samples=5, labels_from=data)
    assert torch.equal(seen[-1], expected)
    with pytest.raises(ConfigError, match="labels_from"):
        generate(Spy(), cfg, num_samples=5)
    generate(Spy(), cfg.override({"model.num_classes": []}), num_samples=5, labels_from=data)
    assert seen[-1] is None
