"""The multi-process scenarios of the tests, grouped by engine: ``python scenario_groups.py GROUP OUT_DIR``.

Starting the processes costs more than most scenarios (every rank imports torch and Lightning, seconds each), so
the scenarios that run on the same engine run one after the other in the same processes: the group's first Trainer
starts the other ranks (Lightning's own launcher, as for a scenario run alone), and every later Trainer finds them
running (as tests/scripts/demo_ddp.py trains every demo model). Each scenario is the ``scenario(out, *args)`` of its
script, writing into ``OUT_DIR/<label>/`` what the script writes when run alone; before each, the process is put
back as a fresh one starts (deterministic algorithms off, one intra-op thread; a fault a scenario plants, the
scenario itself undoes). At the end, rank 0 waits for the other ranks and writes their exit codes to
``OUT_DIR/other_ranks_exit_codes.json`` (tests/scripts/ddp_common.py).

A scenario that raises ends its group with an error (the tests that read the group fail with its traceback), as
it ended its script before. tests/ddp_helpers.py (``GroupRuns``) starts the groups a test session needs in the
background and fails a test whose group did not end within the group's limit.
"""

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_common import wait_for_other_ranks  # noqa: E402

#: The demo models of tests/scripts/model_parallel_demos.py, and the fault scenarios of tests/scripts/fault_ddp.py
#: (``bad_label`` ends its fit with an error on every rank, so it goes last).
MODEL_PARALLEL_DEMOS = "tin,stem,dcnv2_per_feature"
DDP_FAULTS = "spectrum,conflict,correlation,field_pair,bad_label"

#: group -> (seconds it may take on a loaded 2-core machine, [(label, script, arguments after OUT_DIR[, module
#: it needs])]), the longest first (the order the tests start them in). A scenario whose module does not import is
#: left out (its tests skip: pytest.importorskip).
#: ``model_parallel``: Lightning's ModelParallelStrategy on 2 processes (FSDP2, tensor parallelism, TorchRec's
#: DistributedModelParallel); ``ddp``: Lightning's "ddp" on 2 processes; ``fsdp_tp``: FSDP2 beside tensor parallelism
#: on 4; ``single``: one process, what several ``ddp`` and tensor-parallel scenarios must equal.
GROUPS = {
    "model_parallel": (600, [
        ("fsdp", "model_parallel", ("fsdp",)),
        ("tp", "model_parallel", ("tp",)),
        ("demos_fsdp", "model_parallel_demos", (MODEL_PARALLEL_DEMOS, "fsdp")),
        ("demos_fsdp_plain", "model_parallel_demos", (MODEL_PARALLEL_DEMOS, "fsdp", False)),
        ("demos_tp", "model_parallel_demos", (MODEL_PARALLEL_DEMOS, "tp")),
        ("demos_tp_plain", "model_parallel_demos", (MODEL_PARALLEL_DEMOS, "tp", False)),
        ("nan_task", "model_parallel_faults", ("nan_task",)),
        ("missing_task", "model_parallel_faults", ("missing_task",)),
        ("discovery", "model_parallel_faults", ("discovery",)),
        ("spectrum_fault", "model_parallel_faults", ("spectrum_fault",)),
        ("torchrec_table_wise", "torchrec_lightning", ("table_wise",), "torchrec"),
        ("torchrec_column_wise", "torchrec_lightning", ("column_wise",), "torchrec"),
    ]),
    "ddp": (600, [
        ("spectrum", "spectrum_ddp", (2,)),
        ("correlation", "correlation_ddp", (2,)),
        ("conflict", "conflict_ddp", (2,)),
        ("demos", "demo_ddp", ("all", 2)),
        ("model_parallel", "model_parallel", ("ddp",)),
        ("model_parallel_demos", "model_parallel_demos", (MODEL_PARALLEL_DEMOS, "ddp")),
        ("faults", "fault_ddp", (DDP_FAULTS, 2)),
    ]),
    "fsdp_tp": (400, [
        ("fsdp_tp", "model_parallel", ("fsdp_tp",)),
    ]),
    "single": (600, [
        ("spectrum", "spectrum_ddp", (1,)),
        ("correlation", "correlation_ddp", (1,)),
        ("conflict", "conflict_ddp", (1,)),
        ("demos", "demo_ddp", ("all", 1)),
        ("model_parallel", "model_parallel", ("single",)),
        ("model_parallel_demos", "model_parallel_demos", (MODEL_PARALLEL_DEMOS, "single")),
    ]),
}


def fresh_state() -> None:
    """What a scenario may have changed in the process and a fresh process would not have: Lightning's
    ``deterministic=True`` switches torch's deterministic algorithms on for the rest of the process."""
    import torch

    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(1)


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def main(group: str, out: Path) -> None:
    first = None
    for label, script, args, *needs in GROUPS[group][1]:
        if not all(importable(module) for module in needs):
            continue
        fresh_state()
        (out / label).mkdir(parents=True, exist_ok=True)
        trainer = importlib.import_module(script).scenario(out / label, *args)
        first = first if first is not None else trainer
    wait_for_other_ranks(first, out)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
