"""The accelerate launch configs in train/configs/accelerate parse with accelerate's own loader and
say what train/README "Scaling out" says: bf16, DDP launcher (FSDP is the stage's loop.fsdp)."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.utils import DistributedType

FOLDER = Path(__file__).resolve().parents[3] / "train" / "configs" / "accelerate"


@pytest.mark.parametrize("name,machines,processes", [("1gpu", 1, 1), ("8gpu", 1, 8), ("multinode", 2, 16)])
def test_launch_config(name, machines, processes):
    cfg = ClusterConfig.from_yaml_file(str(FOLDER / f"{name}.yaml"))
    assert (cfg.num_machines, cfg.num_processes, cfg.mixed_precision) == (machines, processes, "bf16")
    assert cfg.distributed_type == (DistributedType.NO if processes == 1 else DistributedType.MULTI_GPU)
    assert not cfg.use_cpu
