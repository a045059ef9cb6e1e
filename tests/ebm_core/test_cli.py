"""The ``ebm`` command end to end on the test preset, and its error paths."""

from ebm_core.cli import main


def test_train_then_sample(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--preset", "test", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    for rel in ("samples/samples_ema.png", "samples/chain.png", "plots/energy_diff.png", "plots/grad_norm.png",
                "checkpoints/step_0000006.pt", "metrics.jsonl", "config.yaml"):
        assert (run / rel).is_file(), rel
        assert str(run / rel) in out or rel in ("metrics.jsonl", "config.yaml") or "step_" in rel
    png = tmp_path / "s.png"
    assert main(["sample", str(run / "checkpoints/step_0000006.pt"), "--num", "4", "--out", str(png)]) == 0
    assert png.is_file()
    # the same run directory again is refused, and nothing in it is touched
    stamp = (run / "checkpoints/step_0000006.pt").stat().st_mtime_ns
    assert main(["train", "--preset", "test", "--run-dir", str(run)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (run / "checkpoints/step_0000006.pt").stat().st_mtime_ns == stamp
    # resuming continues to a later iteration
    assert main(["train", "--preset", "test", "--run-dir", str(run), "--iterations", "8",
                 "--resume", str(run / "checkpoints/step_0000006.pt")]) == 0
    assert (run / "checkpoints/step_0000008.pt").is_file()


def test_errors_are_clear(tmp_path, capsys):
    assert main(["train", "--preset", "test", "--set", "loss.w_ent=-3", "--run-dir", str(tmp_path / "a")]) == 2
    assert "loss.w_ent" in capsys.readouterr().err
    assert main(["train", "--preset", "test", "--set", "data.name=cifar10", "--set", f"data.root={tmp_path}/none",
                 "--run-dir", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/none" in err and "Expected layout" in err
    assert main(["train", "--preset", "test", "--set", "train.energy_bound=1e-9", "--run-dir", str(tmp_path / "d")]) == 3
    assert "diverged at iteration 1" in capsys.readouterr().err
    assert (tmp_path / "d" / "plots" / "energy_diff.png").is_file()  # the curves of a diverged run are kept
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert main(["sample", str(bad)]) == 2
    assert "could not be read" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_core_imports_neither_ray_nor_mlflow_and_plugins_register():
    import subprocess
    import sys

    code = ("import sys, ebm_core, ebm_core.cli, ebm_core.trainer, ebm_core.pipeline; "
            "p = ebm_core.cli.parser(); "
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow', 'torch_fidelity')]; "
            "assert not heavy, heavy[:5]; "
            "print(' '.join(sorted(p._subparsers._group_actions[0].choices)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["config", "eval", "reproduce", "sample", "sweep", "train"]


def test_a_full_disk_is_one_line_and_the_last_checkpoint_survives(tmp_path, capsys, monkeypatch):
    import errno

    import torch

    import ebm_core.checkpoint as ckpt

    real_save, calls = torch.save, []

    def save(obj, f):
        calls.append(1)
        if len(calls) > 1:  # the first checkpoint is written, the second meets a full disk
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "checkpoints"))
        real_save(obj, f)

    monkeypatch.setattr(ckpt.torch, "save", save)
    assert main(["train", "--preset", "test", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_0000003.pt"]  # no temp file left
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "step_0000003.pt")["step"] == 3


def test_sample_grids_on_disk_are_large_enough_to_see(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from ebm_core.callbacks import image_grid

    x = torch.rand(16, 3, 16, 16)
    img = Image.open(image_grid(x, tmp_path / "g.png", nrow=8))
    assert img.size == (137 * 4, 35 * 4)  # 8 x 16 px + 9 one-pixel borders, times 4
    px = torch.from_numpy(np.asarray(img)).permute(2, 0, 1)
    first = (x[0] * 255 + 0.5).clamp(0, 255).to(torch.uint8)  # torchvision's rounding
    assert torch.equal(px[:, 4:4 + 64:4, 4:4 + 64:4], first)  # every 4x4 block is one sample pixel


def test_sample_a_conditional_and_a_greyscale_checkpoint(tmp_path, capsys):
    """A conditional model is sampled with labels drawn from its training data; a greyscale one with one channel."""
    cond, grey = tmp_path / "cond", tmp_path / "grey"
    assert main(["train", "--preset", "test", "--run-dir", str(cond), "--set", "data.labels=[shape,colour]",
                 "--set", "model.num_classes=[3,6]"]) == 0
    assert main(["train", "--preset", "test", "--run-dir", str(grey), "--set", "data.name=digits",
                 "--set", "data.channels=1"]) == 0
    capsys.readouterr()
    for run in (cond, grey):
        png = tmp_path / f"{run.name}.png"
        assert main(["sample", str(run / "checkpoints/step_0000006.pt"), "--num", "4", "--out", str(png)]) == 0
        assert png.is_file()
    out = capsys.readouterr().out
    assert "a conditional model; labels ['shape', 'colour'] drawn from the shapes training data" in out
