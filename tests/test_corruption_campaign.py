"""Damaged checkpoints give exact values or an OpError: never a crash, hang or wrong value
(tests/campaigns/corruption.py).

Default suite: 1,000 mutations of the TF fixtures and of saverkit-written checkpoints. Long run
(--runslow, or `python tests/campaigns/corruption.py --mutations 10000`): 10,000.
"""

import json

import pytest
from campaigns import corruption


def _check(report: dict, mutations: int) -> None:
    shown = {k: v for k, v in report.items() if k != "subjects"}
    print(json.dumps(shown, indent=1))
    t = report["totals"]
    assert t["tried"] == mutations
    assert (t["crash"], t["hang"], t["wrong"], t["bad_exception"]) == (0, 0, 0, 0), report["failures"][:5]
    assert t["detected"] > mutations // 2  # most damage must be noticed, not pass as intact
    assert report["errors_not_naming_the_checkpoint"] == 0, report["examples_not_naming_the_checkpoint"]
    for kind in ("flip", "aimed_flip", "overwrite", "truncate", "zero", "append", "swap", "delete"):
        assert report["by_kind"][kind]["tried"] > 0, kind


def test_a_thousand_mutations_read_back_exact_or_raise_op_error():
    _check(corruption.run_campaign(1000, seed=11), 1000)


@pytest.mark.slow
def test_ten_thousand_mutations_long_run():
    _check(corruption.run_campaign(10000, seed=12), 10000)
