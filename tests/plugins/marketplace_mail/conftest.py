"""Helpers for the notification-email tests: read the sample .eml files through the real
MIME parser and the real plugin host."""

from __future__ import annotations

from pathlib import Path

import pytest

import plugins.marketplace_mail
from agent.connector import SourceContext
from agent.mail import message_from_bytes
from agent.mailformats import MailFormat, apply_formats
from agent.models import Message, Record, Submission
from agent.plugins import make_plugin_host

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "notifications"


@pytest.fixture
def formats() -> list[MailFormat]:
    host = make_plugin_host(entrypoints=False, extra=[plugins.marketplace_mail])
    assert [f.name for f in host.mail_formats] == ["fiverr", "upwork", "freelancer"]
    return host.mail_formats


@pytest.fixture
def context(tmp_path: Path) -> SourceContext:
    return SourceContext("inbox", "maildir", tmp_path / "state", tmp_path / "scratch")


def load(name: str, context: SourceContext) -> Message:
    return message_from_bytes((SAMPLES / name).read_bytes(), context)


def messages(records: list[Record]) -> list[Message]:
    return [r for r in records if isinstance(r, Message)]


def submissions(records: list[Record]) -> list[Submission]:
    return [r for r in records if isinstance(r, Submission)]


@pytest.fixture
def interpret(formats: list[MailFormat], context: SourceContext):  # type: ignore[no-untyped-def]
    def run(name: str) -> list[Record]:
        return apply_formats(formats, [load(name, context)], "inbox")

    return run
