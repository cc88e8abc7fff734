"""The end-of-run report: files well formed, the same numbers from the event files as at fit end, compare, the
command line on bad input, and a real TensorBoard server serving the run."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import lightning.pytorch as pl
import pytest
import torch

from lightning.pytorch.loggers import TensorBoardLogger

from helpers import TinyCTR, read_events, tiny_ctr_loader
from lightning_recanalysis import AnalysisReport, EmbeddingSpectrumMonitor
from lightning_recanalysis.__main__ import main as cli
from lightning_recanalysis.findings import Finding, findings_markdown
from lightning_recanalysis.report import RunData, build_report, summary_schema


def _train(root: Path, name: str, seed: int, epochs: int = 2) -> Path:
    pl.seed_everything(seed)
    logger = TensorBoardLogger(str(root), name=name, version="monitors")
    trainer = pl.Trainer(max_epochs=epochs, logger=logger, accelerator="cpu", devices=1, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False,
                         callbacks=[EmbeddingSpectrumMonitor(field_dims={"color": 7, "item": 50}, strict=True),
                                    AnalysisReport()])
    trainer.fit(TinyCTR(lr=0.5), tiny_ctr_loader(n=1024))
    return Path(logger.log_dir)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("runs"), "tiny", seed=0)


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def _check_report_files(directory: Path, stem: str = "report", summary: str = "summary.json") -> dict:
    parser = _Collector()
    parser.feed((directory / f"{stem}.html").read_text())
    assert parser.images and all(src.startswith("data:image/png;base64,") for src in parser.images)
    md = (directory / f"{stem}.md").read_text()
    referenced = [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert referenced and all((directory / ref).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for ref in referenced)
    data = json.loads((directory / summary).read_text())
    jsonschema.validate(data, summary_schema())
    for analysis in data["analyses"].values():
        assert all((directory / f["file"]).exists() for f in analysis["figures"])
    return data


def test_report_files_are_well_formed(run_dir):
    data = _check_report_files(run_dir)
    collapse = data["analyses"]["collapse"]
    assert {f["file"] for f in collapse["figures"]} >= {"figures/collapse_embedding_ia_vs_init.png",
                                                        "figures/collapse_embedding_spectrum.png"}
    item = collapse["numbers"]["views"]["embedding"]["fields"]["item"]
    assert item["cardinality"] == 50 and item["ceiling"] == 8
    assert [step for step, _ in item["history"]] == [0, 16, 32]
    assert data["run"]["name"] == "tiny/monitors"
    assert data["notes"] == []


def test_report_from_event_files_equals_report_at_fit_end(run_dir, tmp_path):
    assert cli(["report", str(run_dir), "--out", str(tmp_path), "--quiet"]) == 0
    at_fit_end = json.loads((run_dir / "summary.json").read_text())
    from_events = json.loads((tmp_path / "summary.json").read_text())
    for volatile in ("created", "run"):
        at_fit_end.pop(volatile), from_events.pop(volatile)
    assert from_events == at_fit_end
    _check_report_files(tmp_path)


def test_dashboard_layout_and_findings_text_are_in_the_event_file(run_dir):
    tags = read_events(run_dir).Tags()
    assert "custom_scalars__config__" in tags["tensors"]
    assert "collapse/findings/text_summary" in tags["tensors"]
    assert "collapse/_record" in tags["tensors"]


def test_live_findings_text_says_what_the_report_says(tmp_path):
    # The monitor's Text tab at its last analysis and the report written at fit end, both with the default
    # thresholds, come from the same findings code: the same sentences. Planted: the 7 colour rows start as a
    # rank-one table (IA 1 of a possible 7) and barely move at this learning rate, so the colour field is collapsed.
    pl.seed_everything(0)
    model = TinyCTR(lr=1e-4)
    with torch.no_grad():
        model.embedding.weight[:7] = torch.outer(torch.arange(1.0, 8.0), torch.ones(8))
    logger = TensorBoardLogger(str(tmp_path), name="planted", version="monitors")
    trainer = pl.Trainer(max_epochs=1, logger=logger, accelerator="cpu", devices=1, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False,
                         callbacks=[EmbeddingSpectrumMonitor(field_dims={"color": 7, "item": 50}), AnalysisReport()])
    trainer.fit(model, tiny_ctr_loader(n=256))
    run_dir = Path(logger.log_dir)
    events = read_events(run_dir)
    live = events.Tensors("collapse/findings/text_summary")[-1].tensor_proto.string_val[0].decode()
    summary = json.loads((run_dir / "summary.json").read_text())
    report = [Finding(**f) for f in summary["analyses"]["collapse"]["findings"]]
    problems = [f for f in report if f.is_problem]
    assert [(f.kind, f.subject) for f in problems] == [("collapse", "embedding/color")]
    assert "uses 1 of the 7 dimensions" in problems[0].text  # rank one: 6 of its 7 unused
    assert live == findings_markdown(report, nothing="nothing to report")


def test_findings_follow_the_thresholds(run_dir, tmp_path):
    strict, lenient = tmp_path / "strict", tmp_path / "lenient"
    # Strict: every direction counts as unused and any two unused dimensions are collapse; lenient: never.
    cli(["report", str(run_dir), "--out", str(strict), "--quiet", "--unused-dimension", "1.01",
         "--collapsed-fraction", "0"])
    cli(["report", str(run_dir), "--out", str(lenient), "--quiet", "--collapsed-fraction", "1.01"])
    strict_findings = json.loads((strict / "summary.json").read_text())["findings"]
    lenient_findings = json.loads((lenient / "summary.json").read_text())["findings"]
    collapsed = lambda findings: sorted(f["subject"] for f in findings if f["kind"] == "collapse")  # noqa: E731
    assert collapsed(strict_findings) == ["embedding/color", "embedding/item"]
    assert collapsed(lenient_findings) == []


def test_compare_two_runs(run_dir, tmp_path):
    other = _train(tmp_path / "runs", "other", seed=1, epochs=1)
    out = tmp_path / "cmp"
    assert cli(["compare", str(run_dir), str(other), "--out", str(out), "--quiet"]) == 0
    data = _check_report_files(out, stem="compare", summary="compare.json")
    finals = data["analyses"]["collapse"]["numbers"]["final_scalars"]
    tag = "collapse/embedding/item/information_abundance"
    assert set(finals[tag]) == {"tiny/monitors", "other/monitors"}
    events = read_events(other)
    assert finals[tag]["other/monitors"] == pytest.approx(events.Scalars(tag)[-1].value)


def test_bad_input_gives_a_clear_message_not_a_traceback(run_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no TensorBoard event files"):
        cli(["report", str(empty)])
    with pytest.raises(SystemExit, match="does not exist"):
        cli(["report", str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="at least two runs"):
        cli(["compare", str(run_dir), "--out", str(tmp_path / "c")])
    # A damaged event file: the report holds what was read before the damage, with a note.
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    event = next(damaged.glob("events.out.tfevents.*"))
    data = event.read_bytes()
    event.write_bytes(data[: len(data) * 2 // 3] + b"\x00garbage" * 10)
    assert cli(["report", str(damaged), "--quiet"]) == 0
    summary = json.loads((damaged / "summary.json").read_text())
    assert summary["analyses"]["collapse"]["numbers"]["views"]["embedding"]["fields"]["item"]["history"]
    # A run with no analysis at all still gets a report that says so.
    plain = tmp_path / "plain"
    pl.Trainer(max_epochs=1, logger=TensorBoardLogger(str(plain), name="p"), enable_progress_bar=False,
               enable_checkpointing=False, enable_model_summary=False).fit(TinyCTR(), tiny_ctr_loader(n=128))
    assert cli(["report", str(plain), "--out", str(tmp_path / "plain_report"), "--quiet"]) == 0
    assert "no analysis records found" in (tmp_path / "plain_report" / "report.md").read_text()


def _multitask_and_sequence_run() -> RunData:
    """Hand-written records of the conflict, entanglement and correlation monitors (two epochs each): view
    ``emb`` has cosines, view ``emb[b]`` none (another task's STEM chunk)."""
    def conflict(epoch, step, user_cos):
        metrics = {"conflict/emb/a_vs_b/cosine_mean": 0.1}
        for field, cos in (("user", user_cos), ("item", 0.4)):
            metrics |= {f"conflict/emb/{field}/a_vs_b/cosine_mean": cos,
                        f"conflict/emb/{field}/a_vs_b/negative_fraction": float(cos < 0),
                        f"conflict/emb/{field}/a_vs_b/norm_ratio": 0.9,
                        f"conflict/emb[b]/{field}/a_vs_b/norm_ratio": 0.0}
        return {"stage": "train", "epoch": epoch, "step": step, "tasks": ["a", "b"], "world_size": 1,
                "measured_steps": 2, "skipped_steps": 0, "problems": {}, "metrics": metrics}

    centers = [0.1 * k for k in range(1, 11)]
    histograms = {view: {subset: {"centers": centers, "density": [float(k % 4) for k in range(10)]}
                         for subset in ("both", "neither")} for view in ("emb", "emb[b]")}
    entanglement = {"stage": "validation", "epoch": 1, "step": 40, "tasks": ["a", "b"], "views": ["emb", "emb[b]"],
                    "world_size": 1, "histograms": histograms,
                    "metrics": {"entanglement/both/pairs": 10.0, "entanglement/neither/pairs": 30.0,
                                "entanglement/emb/both/distance_mean": 0.4, "entanglement/a/auroc/all": 0.7}}
    gt = [[1.0, 0.5, 0.2], [0.3, 0.1, 0.0]]
    target = {"target_category": 0, "name": "0", "samples": 500, "positions": [1, 2, 3], "behavior_categories": [0, 1],
              "behavior_names": ["0", "1"], "ground_truth_mi": gt, "ground_truth": gt,
              "learned": [[0.9, 0.6, 0.1], [0.2, 0.2, 0.0]], "agreement": 0.8}
    correlation = [{"stage": "epoch", "epoch": e, "step": 20 * (e + 1), "samples": 500, "positive_rate": 0.3,
                    "same_category_positions": [1, 2, 3], "same_category_mi": [0.02, 0.01, 0.005],
                    "targets": [target], "agreement": 0.7 + 0.1 * e} for e in range(2)]
    return RunData(name="hand/written", path="hand/written",
                   records={"conflict": [conflict(0, 20, 0.1), conflict(1, 40, -0.3)],
                            "entanglement": [entanglement], "correlation": correlation})


def test_pillow_figures_of_the_multitask_and_correlation_sections(tmp_path):
    build_report(_multitask_and_sequence_run(), tmp_path)
    data = _check_report_files(tmp_path)
    files = {a: [f["file"] for f in analysis["figures"]] for a, analysis in data["analyses"].items()}
    # No heatmap for the view without a single defined cosine: it would be all blank.
    assert files["conflict"] == ["figures/conflict_emb_cosines.png", "figures/conflict_trend.png"]
    assert files["entanglement"] == ["figures/entanglement_emb_distances.png", "figures/entanglement_emb_b_distances.png"]
    assert files["correlation"] == ["figures/correlation_target_0.png", "figures/correlation_agreement.png",
                                    "figures/correlation_same_category.png"]
    assert any(f["subject"] == "emb/user/a_vs_b" for f in data["findings"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_real_tensorboard_serves_the_tags_and_the_layout(run_dir):
    port = _free_port()
    exe = Path(sys.executable).with_name("tensorboard")
    proc = subprocess.Popen([str(exe), "--logdir", str(run_dir.parent), "--host", "127.0.0.1", "--port", str(port),
                             "--load_fast", "false", "--reload_interval", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    base = f"http://127.0.0.1:{port}/data/plugin"
    try:
        deadline = time.time() + 90
        while True:
            try:
                scalars = _get(f"{base}/scalars/tags")
                if scalars.get("monitors"):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail("tensorboard did not serve the run within 90 s")
            time.sleep(1)
        run = "monitors"
        assert "collapse/embedding/item/information_abundance" in scalars[run]
        assert "collapse/embedding/spectrum_heatmap" in _get(f"{base}/images/tags")[run]
        assert "collapse/embedding/item/normalized_spectrum" in _get(f"{base}/histograms/tags")[run]
        layout = _get(f"{base}/custom_scalars/layout")
        titles = {c["title"] for c in layout["category"]}
        assert "collapse: information abundance per field" in titles
        assert "collapse/findings" in " ".join(_get(f"{base}/text/tags")[run])
    finally:
        proc.terminate()
        proc.wait(timeout=20)
