"""The Freelancer.com connector against the sandbox: real plugin code, real HTTP."""

from __future__ import annotations

import logging
import math

import pytest
from pydantic import SecretStr, ValidationError

import plugins.freelancer
from agent.errors import AuthError, SourceError, TransientError
from agent.plugins import make_plugin_host
from plugins.freelancer.connector import FreelancerConnector
from plugins.freelancer.sandbox import Clock, Fault, Sandbox, start_sandbox
from plugins.freelancer.settings import FreelancerSettings
from tests.plugins.freelancer.util import connector as make_connector
from tests.plugins.freelancer.util import expected_messages, fetch_all


def first_sync_minimum(sandbox: Sandbox, page: int, per_request: int) -> int:
    """Requests a first sync needs: self + contracts + threads + messages + files."""
    hired = {b["bidder_id"] for b in sandbox.bids.values() if b["award_status"] == "awarded"}
    projects = sorted(sandbox.projects)
    chunks = [projects[i:i + page] for i in range(0, len(projects), page)]
    # bids and milestones have no count: a full last page costs one more request
    bids = sum(len([b for b in sandbox.bids.values() if b["project_id"] in c]) // page + 1
               for c in chunks)
    milestones = sum(
        len([m for m in sandbox.milestones.values() if m["project_id"] in c]) // page + 1
        for c in chunks)
    threads = sorted(sandbox.threads.values(), key=lambda t: (t["time_updated"], t["id"]),
                     reverse=True)
    batches = [threads[i:i + per_request] for i in range(0, len(threads), per_request)]
    message_pages = sum(max(1, math.ceil(
        sum(1 for m in sandbox.messages.values() if m["thread_id"] in {t["id"] for t in b})
        / page)) for b in batches)
    files = [f for f in sandbox.files.values()
             if sandbox.messages[f.message_id]["from_user"] in hired]
    with_files = {f.thread_id for f in files}
    return (1 + math.ceil(len(projects) / page) + bids + milestones
            + max(1, math.ceil(len(threads) / page)) + message_pages
            + len(with_files) + len(files))


def test_plugin_registers_the_freelancer_platform():
    host = make_plugin_host(entrypoints=False, extra=[plugins.freelancer])
    platform = host.platform("freelancer")
    assert platform.connector is FreelancerConnector
    assert platform.settings is FreelancerSettings


def test_settings_want_a_secret_and_https():
    with pytest.raises(ValidationError, match="never written inline"):
        FreelancerSettings(token="plain-text-token")
    with pytest.raises(ValidationError, match="https"):
        FreelancerSettings(token=SecretStr("x"), base_url="http://api.example.com")
    ok = FreelancerSettings(token=SecretStr("tok-123"), base_url="http://127.0.0.1:8080/api/")
    assert ok.base_url == "http://127.0.0.1:8080"
    assert FreelancerSettings(token=SecretStr("x")).base_url == "https://www.freelancer.com"
    assert "tok-123" not in repr(ok)


def test_first_sync_reads_everything_with_the_minimum_requests(tmp_path):
    with start_sandbox(seed=5, threads=14, messages_per_thread=7) as sandbox:
        run = fetch_all(sandbox, tmp_path, page_size=10, threads_per_request=4)
        assert {m.remote_id for m in run.messages} == expected_messages(sandbox)
        assert len(run.messages) == len(sandbox.messages)  # nothing twice
        assert run.requests == first_sync_minimum(sandbox, 10, 4)
        for message in run.messages:
            raw = sandbox.messages[int(message.remote_id)]
            assert message.thread_remote_id == str(raw["thread_id"])
            assert message.text == raw["message"]
            assert int(message.sent_at.timestamp()) == raw["time_created"]
            assert message.direction == ("out" if raw["from_user"] == sandbox.owner_id
                                         else "in")
            user = sandbox.users[raw["from_user"]]
            assert message.sender.platform == "freelancer"
            assert message.sender.address == str(user["id"])
            assert message.sender.name == user["display_name"]
            assert message.sender.profile_url == f"{sandbox.base_url}/u/{user['username']}"
            assert {r.address for r in message.recipients} == {
                str(u) for u in sandbox.threads[raw["thread_id"]]["thread"]["members"]
            } - {message.sender.address}
        awarded = [b for b in sandbox.bids.values() if b["award_status"] == "awarded"]
        assert sorted(c.remote_id for c in run.contracts) == sorted(
            f"bid:{b['id']}" for b in awarded)
        requested = [m for m in sandbox.milestones.values()
                     if m["status"] == "requested_release"]
        assert sorted(s.remote_id for s in run.submissions) == sorted(
            f"milestone:{m['id']}" for m in requested)
        assert {s.attachment.status for s in run.submissions} == {"delivery_waiting"}
        # the contracts come first, so their freelancers are contractors before messages
        kinds = [type(r).__name__ for r in run.records]
        assert kinds.index("Message") > max(i for i, k in enumerate(kinds) if k != "Message")


def test_contract_fields_and_spent(tmp_path):
    with start_sandbox(seed=6, threads=10) as sandbox:
        run = fetch_all(sandbox, tmp_path)
        for contract in run.contracts:
            bid = sandbox.bids[int(contract.remote_id.split(":")[1])]
            project = sandbox.projects[bid["project_id"]]
            assert contract.title == project["title"]
            assert contract.contractor.address == str(bid["bidder_id"])
            assert contract.contractor.name == sandbox.users[bid["bidder_id"]]["display_name"]
            assert contract.kind == project["type"] and contract.currency == "USD"
            assert (contract.rate if project["type"] == "hourly"
                    else contract.budget) == bid["amount"]
            paid = sum(m["amount"] for m in sandbox.milestones.values()
                       if m["project_id"] == project["id"]
                       and m["bidder_id"] == bid["bidder_id"] and m["status"] == "cleared")
            assert contract.spent == pytest.approx(paid)


def test_files_from_contractors_are_downloaded_others_recorded(tmp_path):
    with start_sandbox(seed=7, threads=12, messages_per_thread=4, attachment_every=1) as sandbox:
        run = fetch_all(sandbox, tmp_path)
        hired = {str(b["bidder_id"]) for b in sandbox.bids.values()
                 if b["award_status"] == "awarded"}
        seen = 0
        for message in run.messages:
            for att in message.attachments:
                seen += 1
                stored = sandbox.files[(int(message.remote_id), att.filename)]
                if message.sender.address in hired:
                    assert att.status == "stored" and att.path is not None
                    data, mode = run.files[(message.remote_id, att.filename)]
                    assert data == stored.data and mode == 0o600
                    assert not att.path.exists()  # removed once the host stored the page
                    assert att.content_type == stored.content_type
                else:
                    assert att.status == "not_downloaded" and att.path is None
        assert seen == len(sandbox.files)
        downloads = sandbox.api_requests("/api/messages/0.1/messages/6")
        assert len(downloads) == sum(
            1 for f in sandbox.files.values()
            if str(sandbox.messages[f.message_id]["from_user"]) in hired)


def test_an_attachment_over_the_cap_is_recorded_not_downloaded(tmp_path):
    with start_sandbox(seed=8, threads=3, big_attachment_bytes=300_000) as sandbox:
        run = fetch_all(sandbox, tmp_path, cap=100_000, wants=lambda identity: True)
        (big,) = [a for m in run.messages for a in m.attachments
                  if a.filename == "export-full.zip"]
        assert big.status == "too_large" and big.path is None and big.data is None
        assert big.size == 300_000 and "cap" in big.note
        assert not sandbox.api_requests("export-full.zip")
        small = [a for m in run.messages for a in m.attachments if a is not big]
        assert small and all(a.status == "stored" for a in small)
        assert not list((tmp_path / "scratch").glob(".tmp-*big*"))


def test_a_file_bigger_than_its_listing_said_is_cut_off(tmp_path):
    with start_sandbox(seed=8, threads=3, big_attachment_bytes=300_000) as sandbox:
        conn_run = fetch_all(sandbox, tmp_path, cap=100_000, wants=lambda identity: True)
        assert conn_run.messages
        # the listing lies about the size: the stream itself is capped
        conn = make_connector(
            sandbox, tmp_path, cap=100_000)
        mid = next(f.message_id for f in sandbox.files.values()
                   if f.filename == "export-full.zip")
        url = f"{sandbox.base_url}/api/messages/0.1/messages/{mid}/export-full.zip"
        assert conn.api.download(url, tmp_path / "scratch", 100_000) is None
        assert not list((tmp_path / "scratch").iterdir()) or all(
            p.stat().st_size <= 100_000 for p in (tmp_path / "scratch").iterdir())
        conn.close()


def test_no_op_sync_costs_one_request(tmp_path):
    with start_sandbox(seed=9, threads=6) as sandbox:
        first = fetch_all(sandbox, tmp_path)
        sandbox.reset_log()
        again = fetch_all(sandbox, tmp_path, first.cursor)
        assert again.records == [] and again.requests == 1
        (only,) = sandbox.requests
        assert only.path == "/api/messages/0.1/threads/"
        assert only.query["from_updated_time"] == [str(first.cursor["since"])]


def test_no_op_sync_with_contracts_due_costs_four(tmp_path):
    with start_sandbox(seed=9, threads=6) as sandbox:
        first = fetch_all(sandbox, tmp_path, contracts_every_minutes=0)
        again = fetch_all(sandbox, tmp_path, first.cursor, contracts_every_minutes=0)
        assert again.records == [] and again.requests == 4  # threads, projects, bids, milestones


def test_owner_id_from_settings_skips_the_self_request(tmp_path):
    with start_sandbox(seed=9, threads=2) as sandbox:
        fetch_all(sandbox, tmp_path, owner_id=sandbox.owner_id)
        assert not sandbox.api_requests("/users/0.1/self/")
        sandbox.reset_log()
        (tmp_path / "b").mkdir()
        fetch_all(sandbox, tmp_path / "b")
        assert len(sandbox.api_requests("/users/0.1/self/")) == 1


def test_incremental_sync_gets_new_and_edited_messages_only(tmp_path):
    with start_sandbox(seed=10, threads=8, messages_per_thread=5) as sandbox:
        first = fetch_all(sandbox, tmp_path)
        t1, t2 = sorted(sandbox.threads)[:2]
        freelancer = next(m for m in sandbox.threads[t1]["thread"]["members"]
                          if m != sandbox.owner_id)
        sandbox.clock.advance(5)
        new_in = sandbox.add_message(t1, freelancer, "Version 3 is up.")
        new_out = sandbox.add_message(t2, sandbox.owner_id, "Thanks, approved.")
        edited = next(m["id"] for m in sandbox.messages.values() if m["thread_id"] == t2
                      and m["id"] != new_out)
        sandbox.edit_message(edited, "(edited) new text")
        sandbox.reset_log()
        second = fetch_all(sandbox, tmp_path, first.cursor)
        got = {m.remote_id: m for m in second.messages}
        assert set(got) == {str(new_in), str(new_out), str(edited)}
        assert got[str(new_out)].direction == "out" and got[str(new_in)].direction == "in"
        assert got[str(edited)].text == "(edited) new text"
        assert second.requests == 2  # one threads page, one messages page for both threads
        third = fetch_all(sandbox, tmp_path, second.cursor)
        assert third.records == [] and third.requests == 1


def test_same_second_boundary_neither_repeats_nor_skips(tmp_path):
    clock = Clock(start=1_790_000_000, frozen=True)
    with Sandbox(seed=11, threads=4, messages_per_thread=3, clock=clock) as sandbox:
        tid = max(sandbox.threads)
        freelancer = next(m for m in sandbox.threads[tid]["thread"]["members"]
                          if m != sandbox.owner_id)
        first_new = sandbox.add_message(tid, freelancer, "at the boundary second")
        first = fetch_all(sandbox, tmp_path)
        assert first.cursor["since"] == int(clock.now())
        # the same second: the thread's time_updated does not move, its count does
        second_new = sandbox.add_message(tid, freelancer, "same second, later")
        second = fetch_all(sandbox, tmp_path, first.cursor)
        assert [m.remote_id for m in second.messages] == [str(second_new)]
        assert str(first_new) not in {m.remote_id for m in second.messages}
        third = fetch_all(sandbox, tmp_path, second.cursor)
        assert third.records == [] and third.requests == 1


def test_paging_over_many_pages(tmp_path):
    with start_sandbox(seed=12, threads=23, messages_per_thread=7,
                       attachment_every=0) as sandbox:
        run = fetch_all(sandbox, tmp_path, page_size=5, threads_per_request=3)
        assert len(run.messages) == len({m.remote_id for m in run.messages}) == 23 * 7
        thread_pages = sandbox.api_requests("/api/messages/0.1/threads/")
        assert [r.query["offset"] for r in thread_pages] == [[str(o)] for o in range(0, 25, 5)]
        message_pages = sandbox.api_requests("/api/messages/0.1/messages/")
        assert all(len(r.query["threads[]"]) <= 3 for r in message_pages)
        assert len(message_pages) == 7 * math.ceil(21 / 5) + math.ceil(14 / 5)
        assert run.requests == first_sync_minimum(sandbox, 5, 3)


def test_paging_stops_at_max_pages(tmp_path):
    with start_sandbox(seed=12, threads=12) as sandbox, \
            pytest.raises(SourceError, match="max_pages"):
        fetch_all(sandbox, tmp_path, page_size=2, max_pages=3)


def test_thread_ids_only_inside_the_thread_object(tmp_path):
    with start_sandbox(seed=13, threads=5) as sandbox:
        sandbox.thread_id_top_level = False
        run = fetch_all(sandbox, tmp_path)
        assert {m.remote_id for m in run.messages} == expected_messages(sandbox)


@pytest.mark.parametrize("shape", ["map", "list"])
def test_milestones_as_map_or_list(tmp_path, shape):
    with start_sandbox(seed=14, threads=15, milestones_shape=shape) as sandbox:
        run = fetch_all(sandbox, tmp_path)
        requested = {f"milestone:{m['id']}" for m in sandbox.milestones.values()
                     if m["status"] == "requested_release"}
        assert requested and {s.remote_id for s in run.submissions} == requested
        assert any(c.spent for c in run.contracts)


def test_milestone_release_requested_later_becomes_a_submission(tmp_path):
    with start_sandbox(seed=14, threads=12) as sandbox:
        first = fetch_all(sandbox, tmp_path, contracts_every_minutes=0)
        pending = next(m for m in sandbox.milestones.values() if m["status"] == "pending")
        sandbox.set_milestone_status(pending["id"], "requested_release")
        second = fetch_all(sandbox, tmp_path, first.cursor, contracts_every_minutes=0)
        assert [s.remote_id for s in second.submissions] == [f"milestone:{pending['id']}"]
        assert second.messages == []


# -- failures ---------------------------------------------------------------------------------


def test_revoked_token_mid_sync_is_an_auth_error_and_resume_loses_nothing(tmp_path):
    with start_sandbox(seed=15, threads=10, messages_per_thread=4,
                       attachment_every=0) as sandbox:
        sandbox.inject(Fault("revoke", path="/api/messages/0.1/messages/", skip=2))
        kept = []
        cursor: dict = {}
        conn = make_connector(
            sandbox, tmp_path, page_size=10, threads_per_request=3)
        with pytest.raises(AuthError) as caught:
            for page in conn.fetch({}):
                kept.extend(page.records)
                if page.cursor is not None:
                    cursor = dict(page.cursor)
        conn.close()
        message = str(caught.value)
        assert "Create a new token at https://accounts.freelancer.com/settings/develop" in message
        assert '[sources.settings] token of "fl"' in message
        assert sandbox.token not in message
        assert cursor.get("run")  # the first batch was committed
        sandbox.token = sandbox.issue_token()
        rest = fetch_all(sandbox, tmp_path, cursor, page_size=10, threads_per_request=3)
        got = [m.remote_id for m in kept + rest.records if hasattr(m, "sent_at")]
        assert set(got) == expected_messages(sandbox)
        assert len(got) == len(set(got))  # the batch boundary: nothing twice


def test_token_error_inside_http_200_is_an_auth_error(tmp_path):
    with start_sandbox(seed=15, threads=2) as sandbox:
        sandbox.inject(Fault("auth200", path="/messages/0.1/threads/"))
        with pytest.raises(AuthError, match="Create a new token"):
            fetch_all(sandbox, tmp_path)


def test_429_storm_stays_under_the_limit_and_completes(tmp_path):
    with start_sandbox(seed=16, threads=8, messages_per_thread=3, rate_limit=5.0,
                       burst=2) as sandbox:
        sandbox.inject(Fault("429", times=4, retry_after=1, path="/messages/0.1/"))
        run = fetch_all(sandbox, tmp_path, rate_per_second=5.0, page_size=10,
                        threads_per_request=4)
        assert {m.remote_id for m in run.messages} == expected_messages(sandbox)
        arrivals = sorted(r.at for r in sandbox.requests)
        assert len([r for r in sandbox.requests if r.fault == "429"]) == 4
        assert not [r for r in sandbox.requests if r.fault == "rate"]
        busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0)
                      for start in arrivals)
        assert busiest <= 5 + 1  # one request of slack for scheduling jitter


def test_5xx_is_retried_then_completes(tmp_path):
    with start_sandbox(seed=17, threads=4) as sandbox:
        sandbox.inject(Fault("503", times=1, retry_after=0), Fault("500", times=1),
                       Fault("502", times=1, path="/messages/0.1/messages/"))
        run = fetch_all(sandbox, tmp_path)
        assert {m.remote_id for m in run.messages} == expected_messages(sandbox)
        assert len([r for r in sandbox.requests if r.status >= 500]) == 3


def test_5xx_that_persists_is_a_clear_transient_error(tmp_path):
    with start_sandbox(seed=17, threads=4) as sandbox:
        sandbox.inject(Fault("500", times=-1, path="/messages/0.1/threads/"))
        with pytest.raises(TransientError, match=r"HTTP 500.*tried 3 times"):
            fetch_all(sandbox, tmp_path, max_retries=2)
        assert len(sandbox.api_requests("/messages/0.1/threads/")) == 3


def test_a_timeout_is_retried_then_a_clear_error(tmp_path):
    with start_sandbox(seed=18, threads=3) as sandbox:
        sandbox.inject(Fault("hang", times=1, hang_seconds=3, path="/messages/0.1/threads/"))
        run = fetch_all(sandbox, tmp_path, timeout=0.5)
        assert {m.remote_id for m in run.messages} == expected_messages(sandbox)
        sandbox.inject(Fault("hang", times=-1, hang_seconds=3, path="/messages/0.1/threads/"))
        with pytest.raises(TransientError, match="timed out"):
            fetch_all(sandbox, tmp_path, timeout=0.5, max_retries=1)


def test_error_envelope_with_http_200_is_retried_then_reported(tmp_path):
    with start_sandbox(seed=19, threads=3) as sandbox:
        sandbox.inject(Fault("error200", times=1, path="/messages/0.1/messages/"))
        run = fetch_all(sandbox, tmp_path)
        assert {m.remote_id for m in run.messages} == expected_messages(sandbox)
        sandbox.inject(Fault("error200", times=-1, path="/messages/0.1/threads/"))
        with pytest.raises(TransientError, match="UNKNOWN_ERROR"):
            fetch_all(sandbox, tmp_path, run.cursor, max_retries=1)


@pytest.mark.parametrize("kind", ["malformed", "html"])
def test_a_broken_body_is_an_error_and_the_cursor_stays(tmp_path, kind):
    with start_sandbox(seed=20, threads=6) as sandbox:
        sandbox.inject(Fault(kind, path="/messages/0.1/messages/"))
        cursors = []
        conn = make_connector(
            sandbox, tmp_path)
        with pytest.raises(SourceError, match=r"malformed JSON|usual envelope"):
            for page in conn.fetch({}):
                if page.cursor is not None:
                    cursors.append(page.cursor)
        conn.close()
        assert all("since" not in c for c in cursors)  # no message cursor moved


def test_the_token_never_reaches_logs_or_errors(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with start_sandbox(seed=21, threads=3) as sandbox:
        sandbox.inject(Fault("500", times=1), Fault("429", times=1, retry_after=0))
        fetch_all(sandbox, tmp_path)
        sandbox.revoke_token()
        with pytest.raises(AuthError) as caught:
            fetch_all(sandbox, tmp_path)
        assert sandbox.token not in str(caught.value)
        assert sandbox.token not in caplog.text


def test_a_file_that_vanished_is_recorded_and_the_sync_goes_on(tmp_path):
    with start_sandbox(seed=22, threads=6, attachment_every=1) as sandbox:
        gone = next(iter(sandbox.files))
        del sandbox.files[gone]  # listed in its message, no longer downloadable
        run = fetch_all(sandbox, tmp_path, wants=lambda identity: True)
        (att,) = [a for m in run.messages if m.remote_id == str(gone[0])
                  for a in m.attachments]
        assert att.status == "unavailable" and "HTTP 404" in att.note
        assert {m.remote_id for m in run.messages} == expected_messages(sandbox)
        assert sum(1 for m in run.messages for a in m.attachments
                   if a.status == "stored") == len(sandbox.files)
