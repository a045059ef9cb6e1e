"""Two ranks on one machine (gloo, two processes): rank 0's weights reach every rank, and the logged losses,
energies and gradient norms are the means of what each worker computes alone on the same step."""

import json
import subprocess
import sys

import pytest


RANK = """
import copy, json, sys
import torch
import torch.distributed as dist
from ebm_core.distributed import all_reduce_mean, broadcast_from_rank0
from ebm_core.presets import test as test_preset
from ebm_core.trainer import Trainer

rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
cfg = test_preset().override({"train.run_dir": f"{out}/run{rank}", "train.grad_norm_every": 1})
t = Trainer(cfg, grad_reduce=all_reduce_mean, rank=rank, world_size=world)
if rank == 1:
    with torch.no_grad():
        for p in t.model.parameters():
            p.add_(1.0)  # a different start on purpose: the broadcast must undo it
broadcast_from_rank0(t.model, t.ema)
weights = float(sum(p.double().sum() for p in t.model.parameters()))
t.buffer.add(torch.rand(32, *t.shape))  # L_ent on from the first step
state = copy.deepcopy(t.state_dict())
t.grad_reduce = None
alone = t.step()  # this worker's own values
t.load_state_dict(state)  # the same step again (weights, buffer, RNG), now reduced across the ranks
t.grad_reduce = all_reduce_mean
reduced = t.step()
json.dump({"alone": alone, "reduced": reduced, "weights": weights}, open(f"{out}/rank{rank}.json", "w"))
dist.destroy_process_group()
"""


def test_two_ranks_log_the_mean_of_their_values(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", RANK, str(r), "2", str(tmp_path / "store"), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["weights"] == r1["weights"]  # rank 1 took rank 0's weights
    keys = [k for k in r0["alone"] if k != "perf/images_per_s"]
    assert {"loss/cd", "loss/kl_ent", "grad_norm/cd", "grad_norm/reg", "grad_norm/kl", "energy/diff"} <= set(keys)
    assert any(abs(r0["alone"][k] - r1["alone"][k]) > 1e-6 for k in keys)  # the workers do differ
    for k in keys:
        mean = (r0["alone"][k] + r1["alone"][k]) / 2
        assert r0["reduced"][k] == pytest.approx(mean, rel=1e-5, abs=1e-7), k
        assert r1["reduced"][k] == pytest.approx(r0["reduced"][k], rel=1e-6, abs=1e-7), k
