"""The monitor contract of AnalysisCallback: the order of its steps, what a failure in each step does, the redraw
rule, and typed records over the published history."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from lightning_recanalysis.callbacks import AnalysisCallback
from lightning_recanalysis.records import Record


@dataclass
class CountRecord(Record):
    total: float = 0.0


class ScriptedMonitor(AnalysisCallback):
    """Follows the contract and notes each call; ``fail`` names a step to raise in (with ``error``)."""

    namespace, analysis_name, record_type = "scripted", "scripted", CountRecord
    fatal_errors = (ValueError,)
    preparing = "counting for {what}"

    def __init__(self, fail: str | None = None, error: type[Exception] = RuntimeError, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fail, self.error, self.calls = fail, error, []

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if self.fail == name:
            raise self.error(f"{name} broke")

    def prepare(self, trainer, pl_module):
        self._step("prepare")
        return 2.0

    @contextlib.contextmanager
    def agree(self, trainer, prepared):
        self.calls.append("agree")
        yield prepared * 3  # as if three ranks had each prepared the same
        self.calls.append("unsync")

    def compute(self, pl_module, agreed):
        self._step("compute")
        return CountRecord(total=agreed)

    def log_record(self, trainer, record):
        self._step("log")
        self.logged = record


def _trainer(epoch: int = 3, step: int = 40) -> SimpleNamespace:
    return SimpleNamespace(current_epoch=epoch, global_step=step, world_size=1)


def test_the_steps_run_in_order_and_the_base_class_sets_when():
    monitor = ScriptedMonitor()
    assert monitor.run_analysis(_trainer(), None) is True
    assert monitor.calls == ["prepare", "agree", "compute", "unsync", "log"]
    assert monitor.history == [{"stage": "epoch", "epoch": 3, "step": 40, "total": 6.0}]
    assert monitor.records == [CountRecord(stage="epoch", epoch=3, step=40, total=6.0)]
    assert monitor.logged.total == 6.0 and monitor.failures == 0
    monitor.run_analysis(_trainer(epoch=0, step=0), None, stage="init")
    assert [(r.stage, r.epoch) for r in monitor.records] == [("init", 0), ("epoch", 3)]


def test_a_failed_prepare_skips_everything_after_it_with_a_warning():
    monitor = ScriptedMonitor(fail="prepare")
    with pytest.warns(RuntimeWarning, match=r"counting for the scripted analysis of epoch 3 failed and is skipped "
                                            r"\(RuntimeError: prepare broke\)"):
        assert monitor.run_analysis(_trainer(), None) is False
    assert monitor.calls == ["prepare"] and monitor.history == [] and monitor.failures == 1


def test_an_error_in_the_data_stops_training():
    monitor = ScriptedMonitor(fail="prepare", error=ValueError)
    with pytest.raises(ValueError, match="prepare broke"):
        monitor.run_analysis(_trainer(), None)


def test_a_failed_compute_keeps_no_record_and_a_failed_log_keeps_it():
    monitor = ScriptedMonitor(fail="compute")
    with pytest.warns(RuntimeWarning, match=r"the scripted analysis of epoch 3 failed"):
        assert monitor.run_analysis(_trainer(), None) is True
    assert monitor.calls == ["prepare", "agree", "compute", "unsync"] and monitor.history == []
    monitor = ScriptedMonitor(fail="log")
    with pytest.warns(RuntimeWarning, match=r"logging the scripted analysis of epoch 3 failed"):
        monitor.run_analysis(_trainer(), None)
    assert monitor.history == [{"stage": "epoch", "epoch": 3, "step": 40, "total": 6.0}]
    with pytest.raises(RuntimeError, match="compute broke"):
        ScriptedMonitor(fail="compute", strict=True).run_analysis(_trainer(), None)


def test_a_repeated_epoch_replaces_its_record_and_the_history_survives_a_state_dict():
    monitor = ScriptedMonitor()
    monitor.run_analysis(_trainer(epoch=1, step=10), None)
    monitor.run_analysis(_trainer(epoch=1, step=12), None)
    assert [r["step"] for r in monitor.history] == [12]
    restored = ScriptedMonitor()
    restored.load_state_dict(monitor.state_dict())
    assert restored.records == monitor.records


def test_a_monitor_without_compute_says_what_to_define():
    with pytest.raises(NotImplementedError, match=r"must define compute\(pl_module, agreed\)"):
        AnalysisCallback().compute(None, None)


def test_changed_redraws_only_past_the_tolerance():
    monitor = ScriptedMonitor()
    monitor.redraw_tolerance = 0.01
    # Without rows: relative to the largest value last drawn (10): 0.05 is 0.5 %, 0.2 is 2 %.
    assert monitor._changed("mi", [10.0, 1.0])
    assert not monitor._changed("mi", [10.05, 1.0])
    assert monitor._changed("mi", [10.2, 1.0])
    # With rows (a map normalised to 0..1): absolute, and any change of rows redraws.
    assert monitor._changed("map", [[0.5]], rows=[3])
    assert not monitor._changed("map", [[0.509]], rows=[3])
    assert monitor._changed("map", [[0.52]], rows=[3])
    assert monitor._changed("map", [[0.52]], rows=[4])
    assert monitor._changed("map", np.zeros((1, 2)), rows=[4])  # a new shape


def test_every_n_epochs_must_be_a_positive_integer():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="every_n_epochs must be a positive integer"):
            ScriptedMonitor(every_n_epochs=bad)
