"""Typed records: the published dict of each analysis round-trips exactly, old and new keys included."""

from __future__ import annotations

import json

from lightning_recanalysis.records import BehaviorTargetRecord, FieldPairRecord, SpectrumRecord


def test_a_spectrum_record_round_trips_and_leaves_out_an_absent_interaction():
    published = {"stage": "init", "epoch": 0, "step": 0,
                 "views": {"t": {"width": 4, "fields": {"a": {"information_abundance": 2.5}}}}}
    record = SpectrumRecord.from_dict(published)
    assert record.interaction is None and record.views["t"]["width"] == 4
    assert record.to_dict() == published and list(record.to_dict()) == list(published)
    with_interaction = {**published, "interaction": {"view": "t", "fields": ["a"], "matrix": [[1.0]]}}
    assert SpectrumRecord.from_dict(with_interaction).to_dict() == with_interaction


def test_keys_a_record_does_not_know_are_kept_and_missing_ones_take_defaults():
    published = {"stage": "epoch", "epoch": 2, "step": 16, "samples": 64, "agreement": None, "new_key": [1, 2]}
    record = BehaviorTargetRecord.from_dict(published)
    assert record.extra == {"new_key": [1, 2]} and record.targets == [] and record.positive_rate == 0.0
    out = record.to_dict()
    assert out["new_key"] == [1, 2] and out["samples"] == 64
    json.dumps(out)  # plain values only


def test_the_field_pair_record_has_the_keys_the_monitor_publishes():
    keys = ["stage", "epoch", "step", "fields", "samples", "bias_correction", "other_fraction",
            "field_mutual_information", "mutual_information", "interaction_information", "learned",
            "learned_source", "agreement", "agreement_interaction"]
    assert list(FieldPairRecord().to_dict()) == keys
