"""The evaluation protocol on a small model: FID, KID and IS from batched samples, the warning for fewer samples
than the paper's 50 000, reference features cached by content hash."""

import json

import torch

from ebm_core.models import build_model
from ebm_core.presets import get_preset
from ebm_eval.evaluate import PAPER_NUM_SAMPLES, evaluate_model
from ebm_eval.features import cache_dir


def test_fewer_samples_than_the_paper_warn_and_are_recorded(tmp_path):
    cfg = get_preset("test").override({"generate.rounds": 1, "generate.steps": 2})
    torch.manual_seed(0)
    model = build_model(cfg.model, resolution=cfg.data.resolution)
    logged: list[str] = []
    res = evaluate_model(model, cfg, ["fid", "is"], out=tmp_path / "a", num_samples=24, batch_size=10, device="cpu",
                         log=logged.append)
    m = res.metrics
    assert {"eval/fid_domain", "eval/kid_domain", "eval/kid_domain_std", "eval/is_domain", "eval/is_domain_std"} <= set(m)
    assert m["eval/fid_num_samples"] == 24 and "eval/fid" not in m and "eval/kid" not in m
    assert len(res.warnings) == 1 and str(PAPER_NUM_SAMPLES) in res.warnings[0]
    assert any(line.startswith("warning: FID and IS from 24 samples") for line in logged)
    saved = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert saved["warnings"] == res.warnings and saved["metrics"]["eval/fid_num_samples"] == 24
    assert (tmp_path / "a" / "samples.png").is_file()
    refs = sorted(cache_dir().glob("reference-domain-*.npz"))
    assert len(refs) == 1  # the full training split's features, keyed by the images' content hash
    again = evaluate_model(model, cfg, ["fid"], out=tmp_path / "b", num_samples=24, batch_size=24, device="cpu",
                           log=logged.append)
    assert sorted(cache_dir().glob("reference-domain-*.npz")) == refs
    assert abs(again.metrics["eval/fid_domain"] - m["eval/fid_domain"]) / m["eval/fid_domain"] < 1.0  # same model
