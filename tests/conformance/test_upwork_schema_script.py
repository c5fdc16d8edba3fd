"""The conformance script catches what it is for: fields, types and enum values the live
schema does not have (run against small stand-in "live" schemas)."""

from __future__ import annotations

from pathlib import Path

from plugins.upwork.queries import SCHEMA_PATH
from tests.conformance.upwork_schema import main, operation_problems, subset_problems

OURS = SCHEMA_PATH.read_text(encoding="utf-8")


def test_our_operations_and_schema_agree_with_themselves() -> None:
    assert operation_problems(OURS) == []
    assert subset_problems(OURS, OURS) == []


def test_a_field_or_value_missing_live_is_reported() -> None:
    live = (OURS.replace("  publicUrl: String\n", "")
            .replace("Paid PaidByUpwork", "Paid")
            .replace("  offerIds: [ID!]\n", "  offerIds: [ID]\n"))
    problems = subset_problems(OURS, live)
    assert "GenericUser.publicUrl is not in the live schema" in problems
    assert "enum OfferMilestoneState has no value PaidByUpwork" in problems
    assert any(p.startswith("Room.offerIds is [ID] live") for p in problems)
    assert any("publicUrl" in p for p in operation_problems(live))


def test_missing_live_file_is_exit_2(tmp_path: Path) -> None:
    assert main([str(tmp_path / "nowhere.graphql")]) == 2
    live = tmp_path / "live.graphql"
    live.write_text(OURS.replace("  roomStory(roomId: ID!, storyId: ID!): RoomStory\n", ""))
    assert main([str(live)]) == 1
    live.write_text(OURS)
    assert main([str(live)]) == 0
