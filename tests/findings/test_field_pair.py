"""Field-pair findings: the pairs ranked by a planted interaction information, and the overlap with the learned
strengths counted by hand."""

import numpy as np

from lightning_recanalysis.findings import ReportThresholds, field_pair_findings
from lightning_recanalysis.findings.field_pair import pairs_by_interaction
from lightning_recanalysis.records import FieldPairRecord


def _symmetric(upper: dict, n: int = 4) -> list[list[float]]:
    m = np.zeros((n, n))
    for (i, j), v in upper.items():
        m[i, j] = m[j, i] = v
    return m.tolist()


II = _symmetric({(0, 1): 0.01, (0, 2): 0.30, (0, 3): 0.02, (1, 2): 0.03, (1, 3): 0.20, (2, 3): 0.10})


def test_pairs_are_ranked_by_interaction_information():
    record = FieldPairRecord(fields=list("abcd"), interaction_information=II)
    assert pairs_by_interaction(record) == [(0, 2), (1, 3), (2, 3), (1, 2), (0, 3), (0, 1)]


def test_overlap_of_the_top_three_and_the_verdict():
    # The model's three strongest: (0, 2), (0, 1), (1, 3): two of the data's three (0, 2), (1, 3), (2, 3).
    learned = _symmetric({(0, 1): 5.0, (0, 2): 9.0, (0, 3): 0.1, (1, 2): 0.2, (1, 3): 4.0, (2, 3): 0.3})
    record = FieldPairRecord(stage="epoch", fields=list("abcd"), samples=10, interaction_information=II,
                             learned=learned, agreement=0.3, agreement_interaction=None)
    [finding] = field_pair_findings([record], ReportThresholds())
    assert "are a x c, b x d, c x d;" in finding.text
    assert "couples 2 of them among its own 3 strongest (a x c, a x b, b x d)" in finding.text
    z = 1.959964 * (1.06 / 3) ** 0.5  # 6 pairs: Fisher's z with Fieller's standard error
    low, high = np.tanh(np.arctanh(0.3) - z), np.tanh(np.arctanh(0.3) + z)
    assert f"Spearman 0.30 with pair MI (95% interval {low:+.2f} to {high:+.2f}), - with interaction" in finding.text
    assert finding.verdict == "inconclusive"
    all_three = _symmetric({(0, 1): 0.1, (0, 2): 9.0, (0, 3): 0.2, (1, 2): 0.3, (1, 3): 4.0, (2, 3): 5.0})
    record.learned = all_three
    assert field_pair_findings([record], ReportThresholds())[0].verdict == "fine"


def test_no_learned_strength_or_no_samples_no_finding():
    counted = FieldPairRecord(stage="epoch", fields=list("abcd"), samples=10, interaction_information=II)
    assert field_pair_findings([counted], ReportThresholds()) == []
    empty = FieldPairRecord(stage="epoch", fields=list("abcd"), samples=0, interaction_information=II, learned=II)
    assert field_pair_findings([empty], ReportThresholds()) == []
