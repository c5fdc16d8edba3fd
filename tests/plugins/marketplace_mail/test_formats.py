"""Notification emails: recognition and attribution per marketplace, deliveries, drops,
robustness. The samples in tests/data/notifications are RECONSTRUCTED (see its README);
they go through the real MIME parser, the real plugin host and apply_formats."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import timedelta

import pytest

import plugins.marketplace_mail
from agent.mailformats import NOTIFICATION, MailFormat, apply_formats, domain_matches
from agent.models import Attachment, Identity, Message, Submission
from agent.plugins import hookimpl, make_plugin_host
from tests.plugins.marketplace_mail.conftest import SAMPLES, load, messages, submissions

ROBOTS = ("noreply@e.fiverr.com", "team@announce.fiverr.com", "donotreply@upwork.com",
          "noreply@notifications.freelancer.com", "noreply@freelancer.com")


def assert_no_robot(records) -> None:
    """The notification's own address is never a sender, recipient or contractor."""
    for record in records:
        people = ([record.sender, *record.recipients] if isinstance(record, Message)
                  else [record.contractor])
        for who in people:
            assert who.address.lower() not in ROBOTS, record
            assert who.platform != "email" or "fiverr" not in who.address, record
            assert who.name.lower() not in ("fiverr", "upwork", "freelancer"), record


def test_every_sample_says_it_is_reconstructed() -> None:
    names = sorted(p.name for p in SAMPLES.glob("*.eml"))
    assert len(names) >= 15
    readme = (SAMPLES / "README.md").read_text()
    assert "RECONSTRUCTED" in readme
    for name in names:
        head = (SAMPLES / name).read_bytes().split(b"\n\n", 1)[0]
        assert b"X-Retainer-Sample:" in head, name
        assert name in readme, f"{name} is not described in the README"


# -- Fiverr ---------------------------------------------------------------------------------

PIXEL = Identity("fiverr", "pixelcraft_studio", name="Pixel Craft",
                 profile_url="https://www.fiverr.com/pixelcraft_studio")


def test_fiverr_message_is_from_the_seller_on_fiverr(interpret, context) -> None:
    original = load("fiverr-message.eml", context)
    records = interpret("fiverr-message.eml")
    assert len(records) == 1
    msg = records[0]
    assert isinstance(msg, Message)
    assert msg.sender == PIXEL
    assert msg.platform == "fiverr"
    assert msg.remote_id == original.remote_id  # stable: the email's own id
    assert msg.thread_remote_id == "fiverr:inbox:pixelcraft_studio"
    assert msg.text.startswith("Hi Sam! Thanks for the order.")
    assert "View Message" not in msg.text and "Unsubscribe" not in msg.text
    assert msg.html == ""
    info = msg.extra[NOTIFICATION]
    assert info["kind"] == "message"
    assert info["url"] == "https://www.fiverr.com/inbox/pixelcraft_studio"
    assert info["email_from"] == "noreply@e.fiverr.com"
    assert msg.extra["message_id"] == original.extra["message_id"]
    assert_no_robot(records)


def test_fiverr_order_message_in_html_only_template_goes_to_the_order_thread(interpret) -> None:
    [msg] = interpret("fiverr-order-message.eml")
    assert isinstance(msg, Message)
    assert msg.sender.key == "fiverr:pixelcraft_studio"
    assert msg.thread_remote_id == "fiverr:order:FO7K2M9QX4"
    assert msg.text == ("Quick update: the first three concepts are coming along well. "
                        "I will deliver them tomorrow morning.")
    assert msg.extra[NOTIFICATION]["order_id"] == "FO7K2M9QX4"


def test_fiverr_delivery_yields_a_waiting_submission_before_the_message(interpret, context) -> None:
    original = load("fiverr-delivered.eml", context)
    records = interpret("fiverr-delivered.eml")
    assert [type(r) for r in records] == [Submission, Message]
    sub, msg = records
    assert isinstance(sub, Submission) and isinstance(msg, Message)
    assert sub.contractor == PIXEL
    assert sub.remote_id == f"{original.remote_id}#delivery"
    assert sub.submitted_at == original.sent_at
    assert sub.thread_remote_id == msg.thread_remote_id == "fiverr:order:FO7K2M9QX4"
    assert sub.contract_remote_id == "FO7K2M9QX4"
    assert sub.title == "I will design a modern minimalist logo for your business"
    att = sub.attachment
    assert att.status == "delivery_waiting"
    assert att.url.startswith("https://www.fiverr.com/orders/FO7K2M9QX4/activities")
    assert "FO7K2M9QX4" in att.filename and "pixelcraft_studio" in att.filename
    assert att.data is None and att.path is None
    assert sub.extra["platform"] == "fiverr"
    assert sub.extra["review_deadline"] == (original.sent_at + timedelta(days=3)).isoformat()
    # the quoted-printable soft line breaks and the em dash survive
    assert msg.text == ("Here are the three concepts in PNG and AI, plus a one-page brand sheet. "
                        "Let me know which direction you prefer \u2014 revisions are included.")
    assert msg.sender == PIXEL and msg.extra[NOTIFICATION]["kind"] == "delivery"
    assert_no_robot(records)


def test_fiverr_revision_is_the_owners_request_to_the_seller(interpret) -> None:
    [msg] = interpret("fiverr-revision.eml")
    assert isinstance(msg, Message)
    assert msg.direction == "out"
    assert msg.recipients == (PIXEL,)
    assert msg.thread_remote_id == "fiverr:order:FO7K2M9QX4"
    assert msg.extra[NOTIFICATION]["kind"] == "revision"
    assert "for a revision on order #FO7K2M9QX4" in msg.text
    assert_no_robot([msg])


def test_fiverr_completed_order(interpret) -> None:
    [msg] = interpret("fiverr-completed.eml")
    assert isinstance(msg, Message)
    assert msg.sender == PIXEL
    assert msg.extra[NOTIFICATION]["kind"] == "completed"
    assert msg.thread_remote_id == "fiverr:order:FO7K2M9QX4"
    assert "is now complete" in msg.text and "Review order" not in msg.text


@pytest.mark.parametrize("name", ["fiverr-marketing.eml", "fiverr-announce.eml",
                                  "fiverr-receipt.eml"])
def test_fiverr_marketing_and_receipts_are_dropped_not_misattributed(interpret, name,
                                                                      caplog) -> None:
    caplog.set_level(logging.INFO, "retainer.mailformats")
    assert interpret(name) == []
    assert "dropped" in caplog.text and "not a conversation" in caplog.text


def test_fiverr_hostile_delivery_keeps_only_a_fiverr_url(interpret, caplog) -> None:
    records = interpret("fiverr-hostile-delivery.eml")
    [sub] = submissions(records)
    [msg] = messages(records)
    # the forged button points at fiverr.com.evil.example: never used
    assert sub.attachment.url == "https://www.fiverr.com/orders/FO9ZX81QQ2"
    assert sub.contractor.key == "fiverr:ink_wizard" and sub.contractor.name == "Ink Wizard"
    assert msg.text == "All files attached in the delivery."
    for text in (msg.text, sub.title, sub.attachment.filename):
        assert "evil" not in text and "alert" not in text and "script" not in text


# -- Upwork ---------------------------------------------------------------------------------


def test_upwork_message_from_the_via_upwork_name_in_its_room(interpret) -> None:
    [msg] = interpret("upwork-message.eml")
    assert isinstance(msg, Message)
    assert msg.platform == "upwork"
    assert msg.sender == Identity("upwork", "Jane D.", name="Jane D.",
                                  profile_url="https://www.upwork.com/freelancers/~01f3c9a2b7e45d1a08")
    assert msg.thread_remote_id == "upwork:room:room_8f2c1e9a4b7d0c3e"
    assert msg.text == ("Hi Sam, I've read the brief. I'll share a first sketch by Wednesday. "
                        "Do you have the brand colours as hex codes?")
    info = msg.extra[NOTIFICATION]
    assert info["job"] == "Logo redesign for a bakery"
    assert info["room_id"] == "room_8f2c1e9a4b7d0c3e"
    assert_no_robot([msg])


def test_upwork_two_cards_make_two_messages_with_stable_ids(interpret, context) -> None:
    original = load("upwork-two-messages.eml", context)
    records = interpret("upwork-two-messages.eml")
    assert [r.remote_id for r in messages(records)] == [original.remote_id,
                                                        f"{original.remote_id}#2"]
    assert [m.text for m in messages(records)] == [
        "First sketches are up in the room.",
        "Option B uses the wheat motif you mentioned;\noption C is the wordmark only.",
    ]
    assert {m.sender.key for m in messages(records)} == {"upwork:jane d."}
    assert {m.thread_remote_id for m in messages(records)} == {"upwork:room:room_8f2c1e9a4b7d0c3e"}
    assert interpret("upwork-two-messages.eml") == records  # same email, same records


def test_upwork_work_submitted_yields_a_waiting_submission(interpret, context) -> None:
    original = load("upwork-work-submitted.eml", context)
    records = interpret("upwork-work-submitted.eml")
    assert [type(r) for r in records] == [Submission, Message]
    sub, msg = records
    assert isinstance(sub, Submission) and isinstance(msg, Message)
    assert sub.contractor.key == "upwork:jane d."  # the same key as her messages
    assert sub.attachment.status == "delivery_waiting"
    assert sub.attachment.url == ("https://www.upwork.com/ab/contracts/41234567/milestones"
                                  "?submission=9981")
    assert sub.title == "Logo concepts"
    assert sub.contract_remote_id == "41234567"
    assert sub.extra["review_deadline"] == (original.sent_at + timedelta(days=14)).isoformat()
    assert msg.sender.key == "upwork:jane d." and msg.extra[NOTIFICATION]["kind"] == "submission"
    assert msg.thread_remote_id == sub.thread_remote_id == "upwork:contract:41234567"
    assert_no_robot(records)


def test_upwork_marketing_that_names_a_freelancer_is_dropped(interpret) -> None:
    assert interpret("upwork-hiring-tips.eml") == []


# -- Freelancer.com ---------------------------------------------------------------------------


def test_freelancer_message(interpret) -> None:
    [msg] = interpret("freelancer-message.eml")
    assert isinstance(msg, Message)
    assert msg.platform == "freelancer"
    assert msg.sender == Identity("freelancer", "devmaster88", name="Dev Master",
                                  profile_url="https://www.freelancer.com/u/devmaster88")
    assert msg.thread_remote_id == "freelancer:thread:412998877"
    assert msg.text == ("Hello! The staging link is ready for a first look. "
                        "I still need the menu PDF for the last section.")
    assert msg.extra[NOTIFICATION]["project"] == "38011223"
    assert_no_robot([msg])


def test_freelancer_milestone_release_request_is_a_waiting_delivery(interpret) -> None:
    records = interpret("freelancer-milestone-request.eml")
    assert [type(r) for r in records] == [Submission, Message]
    sub, msg = records
    assert isinstance(sub, Submission) and isinstance(msg, Message)
    assert sub.contractor.key == "freelancer:devmaster88"
    assert sub.attachment.status == "delivery_waiting"
    assert sub.attachment.url.startswith("https://www.freelancer.com/projects/website-design/")
    assert sub.title == "Landing page: final version"
    assert sub.thread_remote_id == "freelancer:project:38011223"
    assert msg.extra[NOTIFICATION]["amount"] == "$150.00 USD"
    assert msg.text.startswith("Dev Master has requested that you release")
    assert_no_robot(records)


def test_freelancer_recommendations_are_dropped(interpret) -> None:
    assert interpret("freelancer-recommendations.eml") == []


# -- subjects are hints: what happens when they change ------------------------------------------


def attributed_to_people(records) -> set[str]:
    return {r.sender.key for r in messages(records) if r.sender.platform != "email"} | {
        s.contractor.key for s in submissions(records)}


@pytest.mark.parametrize(("sample", "subject"), [
    ("fiverr-marketing.eml", "Sam, your next logo is one click away"),
    ("fiverr-marketing.eml", "Complete your order with pixelcraft_studio"),
    ("fiverr-marketing.eml", "Great news: You've received an order from buyer42"),
    ("fiverr-marketing.eml", ""),
    ("upwork-hiring-tips.eml", "Ready for your next project?"),
    ("freelancer-recommendations.eml", "Hello Sam"),
])
def test_marketing_with_an_unhelpful_subject_is_never_attributed(formats, context, sample,
                                                                 subject) -> None:
    """Their bodies say "new messages from..." and name a real seller; with no link to a
    private order, room or thread, nobody is credited with a message."""
    original = replace(load(sample, context), subject=subject)
    records = apply_formats(formats, [original], "inbox")
    assert attributed_to_people(records) == set()
    assert all(r.extra.get("system") for r in messages(records))


@pytest.mark.parametrize(("sample", "who"), [
    ("fiverr-message.eml", "fiverr:pixelcraft_studio"),
    ("fiverr-delivered.eml", "fiverr:pixelcraft_studio"),
    ("upwork-message.eml", "upwork:jane d."),
    ("freelancer-message.eml", "freelancer:devmaster88"),
    ("freelancer-milestone-request.eml", "freelancer:devmaster88"),
])
def test_a_renamed_subject_is_still_read_from_the_body(formats, context, sample, who) -> None:
    """A private link (reply button, order, room, thread) lets the body say what it is."""
    original = replace(load(sample, context), subject="Notification")
    before = apply_formats(formats, [load(sample, context)], "inbox")
    records = apply_formats(formats, [original], "inbox")
    assert attributed_to_people(records) == {who}
    assert [type(r) for r in records] == [type(r) for r in before]


# -- everything else ------------------------------------------------------------------------


def test_ordinary_mail_is_untouched_even_when_it_mentions_fiverr(formats, context) -> None:
    original = load("plain-client.eml", context)
    assert apply_formats(formats, [original], "inbox") == [original]


def test_a_whole_mailbox_in_one_page_keeps_order_and_count(formats, context) -> None:
    names = sorted(p.name for p in SAMPLES.glob("*.eml"))
    records = apply_formats(formats, [load(n, context) for n in names], "inbox")
    assert len(messages(records)) == 13
    assert len(submissions(records)) == 4
    assert_no_robot([r for r in records
                     if not (isinstance(r, Message) and r.sender.platform == "email")])
    platforms = {m.platform for m in messages(records)}
    assert platforms == {"fiverr", "upwork", "freelancer", None}
    assert all(m.sender.platform != "email" for m in messages(records) if m.platform)


@pytest.mark.parametrize("sender", [
    "noreply@e.fiverr.com.evil.example", "noreply@notfiverr.com", "fiverr.com@attacker.example",
    "noreply@upwork.com.co", "noreply@freelancer.community",
])
def test_lookalike_senders_are_not_notifications(formats, context, sender) -> None:
    original = load("fiverr-delivered.eml", context)
    forged = replace(original, sender=Identity("email", sender, name="Fiverr"))
    assert apply_formats(formats, [forged], "inbox") == [forged]


def test_domain_matches() -> None:
    assert domain_matches("e.fiverr.com", "fiverr.com")
    assert domain_matches("FIVERR.COM.", "fiverr.com")
    assert not domain_matches("fiverr.com.evil.example", "fiverr.com")
    assert not domain_matches("notfiverr.com", "fiverr.com")
    assert not domain_matches("", "fiverr.com")


# -- robustness -----------------------------------------------------------------------------


def test_missing_username_keeps_the_mail_as_a_system_message(formats, context, caplog) -> None:
    original = load("fiverr-message.eml", context)
    broken = replace(original,
                     html=original.html.replace("(@pixelcraft_studio)", "")
                     .replace("inbox%2Fpixelcraft_studio", "inbox"),
                     text=original.text.replace("(@pixelcraft_studio)", "")
                     .replace("inbox%2Fpixelcraft_studio", "inbox"),
                     subject="You've received messages from Pixel Craft")
    with caplog.at_level(logging.WARNING):
        [kept] = apply_formats(formats, [broken], "inbox")
    assert isinstance(kept, Message)
    assert kept.sender == original.sender  # not invented
    assert kept.remote_id == original.remote_id
    assert kept.extra["system"] is True
    assert kept.extra[NOTIFICATION]["kind"] == "message"
    assert kept.platform == "fiverr"
    assert "not understood" in caplog.text and "no seller username" in caplog.text


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.eml")))
@pytest.mark.parametrize("damage", ["no_html", "no_text", "empty", "garbage_html",
                                    "deep_html", "no_subject"])
def test_damaged_samples_never_raise_and_never_name_a_robot(formats, context, name,
                                                            damage) -> None:
    original = load(name, context)
    changes = {
        "no_html": {"html": ""},
        "no_text": {"text": ""},
        "empty": {"html": "", "text": "", "subject": ""},
        "garbage_html": {"html": "<table><tr><td class='content'><a href='http://[::1'>x</a>"
                                 "<a href='javascript:alert(1)'>y</a><script>while(1){}</script>"
                                 "\x00\ud800</td>"},
        "deep_html": {"html": "<div>" * 5000 + "(@deep_user)" + "</div>" * 5000},
        "no_subject": {"subject": ""},
    }[damage]
    damaged = replace(original, **changes)
    records = apply_formats(formats, [damaged], "inbox")
    for record in records:
        assert isinstance(record, Message | Submission)
        if isinstance(record, Message) and record.sender.platform == "email":
            # kept as it came: either a non-notification, or marked as a system message
            assert (record == damaged
                    or record.extra.get("system") is True), record
        else:
            assert_no_robot([record])


@pytest.mark.parametrize("name", ["fiverr-message.eml", "fiverr-delivered.eml",
                                  "fiverr-completed.eml", "upwork-message.eml",
                                  "upwork-work-submitted.eml", "freelancer-message.eml"])
def test_the_plain_text_part_alone_gives_the_same_reading(formats, context, name) -> None:
    """Multipart samples read from their text part only (no HTML): same people, threads,
    kinds and message text (up to quotes), so a changed HTML template is not fatal."""
    original = load(name, context)
    with_html = apply_formats(formats, [original], "inbox")
    text_only = apply_formats(formats, [replace(original, html="")], "inbox")

    def reading(records):
        return [(type(r).__name__, r.sender.key if isinstance(r, Message) else r.contractor.key,
                 r.thread_remote_id,
                 r.text.replace('"', "") if isinstance(r, Message) else r.attachment.url)
                for r in records]

    assert reading(text_only) == reading(with_html)


@pytest.mark.parametrize("html", [
    "<p>x <a href='https://www.fiverr.com/inbox/seller_%d'>l</a></p>" * 20000,
    "<div>" * 100000 + "</div>" * 100000,
    "<table>" + "<tr><td>cell</td></tr>" * 50000 + "</table>",
])
def test_huge_html_is_handled_quickly(formats, context, html) -> None:
    original = load("fiverr-message.eml", context)
    started = time.process_time()  # CPU time: guards against runaway parsing, not machine load
    records = apply_formats(formats, [replace(original, html=html[:1_000_000])], "inbox")
    assert time.process_time() - started < 5
    assert len(records) == 1


def test_a_format_that_raises_or_returns_junk_keeps_the_mail(context, caplog) -> None:
    original = load("fiverr-message.eml", context)

    def boom(message: Message):
        raise ValueError("template changed")

    def partial(message: Message):
        yield replace(message, text="half")
        raise RuntimeError("died half way")

    formats = [
        MailFormat("boom", "x", lambda m: m.subject.startswith("You've"), boom),
        MailFormat("never", "x", lambda m: False, lambda m: []),
    ]
    with caplog.at_level(logging.ERROR):
        assert apply_formats(formats, [original], "inbox") == [original]
    assert 'mail format "boom" failed' in caplog.text and "template changed" in caplog.text
    assert apply_formats([MailFormat("p", "x", lambda m: True, partial)], [original],
                         "inbox") == [original]
    junk = MailFormat("junk", "x", lambda m: True, lambda m: ["not a record"])  # type: ignore
    assert apply_formats([junk], [original], "inbox") == [original]
    assert "other than records" in caplog.text
    bad_match = MailFormat("m", "x", lambda m: 1 / 0 > 0, lambda m: [])
    assert apply_formats([bad_match], [original], "inbox") == [original]


def test_records_that_are_not_messages_pass_through(formats, context) -> None:
    sub = Submission("s1", load("fiverr-message.eml", context).sent_at,
                     Identity("fiverr", "pixelcraft_studio"), Attachment("x", url="https://x"))
    assert apply_formats(formats, [sub], "inbox") == [sub]


# -- extension: another plugin adds a marketplace ---------------------------------------------


class PeoplePerHour:
    """A tiny third-party plugin object: one more marketplace, no core change."""

    @hookimpl
    def register_mail_formats(self, register) -> None:
        def matches(message: Message) -> bool:
            return domain_matches(message.sender.address.rpartition("@")[2], "peopleperhour.com")

        def interpret(message: Message):
            user = message.subject.rpartition(" from ")[2]
            return [replace(message, sender=Identity("peopleperhour", user, name=user),
                            platform="peopleperhour", html="")]

        register(MailFormat("peopleperhour", "peopleperhour", matches, interpret))


def test_another_plugin_adds_a_marketplace_without_touching_the_core(context) -> None:
    host = make_plugin_host(entrypoints=False, extra=[plugins.marketplace_mail, PeoplePerHour()])
    assert [f.name for f in host.mail_formats] == ["fiverr", "upwork", "freelancer",
                                                   "peopleperhour"]
    pph = replace(load("plain-client.eml", context),
                  sender=Identity("email", "noreply@peopleperhour.com", name="PeoplePerHour"),
                  subject="New message from tom_writes")
    fiverr = load("fiverr-message.eml", context)
    out = apply_formats(host.mail_formats, [pph, fiverr], "inbox")
    assert [m.sender.key for m in messages(out)] == ["peopleperhour:tom_writes",
                                                     "fiverr:pixelcraft_studio"]
    assert messages(out)[0].platform == "peopleperhour"
