"""SIGKILL at random moments while saving never loses the latest checkpoint (tests/campaigns/kill.py).

Default suite: 24 kills over the six lanes (ways of saving). Long run
(--runslow, or `python tests/campaigns/kill.py run --kills 200`): 200 kills.
"""

import json

import pytest
import saverkit.train
from campaigns import kill


def _api() -> str:
    # The Saver is the API under test; until it exists the same steps run through
    # saverkit.bundle + the state-file functions.
    return "saver" if hasattr(saverkit.train, "Saver") else "bundle"


def _check(report: dict, kills: int) -> None:
    print(json.dumps(report, indent=1))
    assert report["kills"] == kills
    assert report["problems"] == []
    # kills must really land inside saves, or the campaign proves nothing
    assert report["kills_mid_save"] >= kills // 2
    assert all(step >= 3 for step in report["max_step"].values())
    assert report["temps_not_cleaned"] == []


def test_sigkill_during_saves_leaves_a_complete_latest_checkpoint():
    _check(kill.run_campaign(24, seed=1, api=_api()), 24)


@pytest.mark.slow
def test_sigkill_during_saves_long_run():
    _check(kill.run_campaign(200, seed=2, api=_api()), 200)


@pytest.mark.slow
def test_sigkill_during_bundle_level_saves_long_run():
    _check(kill.run_campaign(100, seed=3, api="bundle"), 100)
