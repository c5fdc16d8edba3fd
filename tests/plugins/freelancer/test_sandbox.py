"""The sandbox itself speaks the Freelancer.com conventions the plugin relies on."""

from __future__ import annotations

import requests

from plugins.freelancer.sandbox import Clock, Fault, Sandbox, start_sandbox


def get(sandbox: Sandbox, path: str, token: str | None = None, **params):
    headers = {"freelancer-oauth-v1": token or sandbox.token}  # header names: any case
    return requests.get(sandbox.base_url + path, params=params, headers=headers, timeout=5)


def test_envelope_paging_and_array_parameters():
    with start_sandbox(seed=2, threads=9, messages_per_thread=4) as sandbox:
        first = get(sandbox, "/api/messages/0.1/threads/", limit=4, count="true").json()
        assert first["status"] == "success" and first["request_id"]
        assert first["result"]["total_count"] == 9 and first["result"]["users"] is None
        items = first["result"]["threads"]
        assert len(items) == 4
        assert [t["time_updated"] for t in items] == sorted(
            (t["time_updated"] for t in items), reverse=True)
        rest = get(sandbox, "/api/messages/0.1/threads/", limit=100, offset=4).json()
        assert "total_count" not in rest["result"]  # counts are opt-in
        assert len(rest["result"]["threads"]) == 5
        tids = [t["thread"]["id"] for t in items[:2]]
        msgs = get(sandbox, "/api/messages/0.1/messages/", **{"threads[]": tids}).json()
        assert {m["thread_id"] for m in msgs["result"]["messages"]} == set(tids)
        assert msgs["result"]["unfiltered_count"] == 8
        times = [m["time_created"] for m in msgs["result"]["messages"]]
        assert times == sorted(times, reverse=True) and all(isinstance(t, int) for t in times)


def test_errors_have_the_error_envelope():
    with start_sandbox(seed=2, threads=2) as sandbox:
        missing = get(sandbox, "/api/messages/0.1/messages/")
        assert missing.status_code == 400
        assert missing.json()["status"] == "error"
        assert missing.json()["error_code"] == "ExceptionCodes.MISSING_ARGUMENT"
        assert get(sandbox, "/api/messages/0.1/threads").status_code == 404  # slash matters
        assert get(sandbox, "/api/messages/0.1/threads/", token="nope").status_code == 401
        sandbox.inject(Fault("error200"))
        answer = get(sandbox, "/api/messages/0.1/threads/")
        assert answer.status_code == 200 and answer.json()["status"] == "error"
        sandbox.inject(Fault("revoke"))
        assert get(sandbox, "/api/messages/0.1/threads/").status_code == 401
        assert get(sandbox, "/api/messages/0.1/threads/").json()["error_code"].endswith(
            "REVOKED")
        assert [r.status for r in sandbox.requests][-3:] == [200, 401, 401]


def test_token_expiry_follows_the_injected_clock():
    clock = Clock(start=1_790_000_000, frozen=True)
    with Sandbox(seed=1, threads=1, clock=clock, token_lifetime=3600) as sandbox:
        assert get(sandbox, "/api/users/0.1/self/").json()["result"]["id"] == sandbox.owner_id
        clock.advance(3601)
        assert get(sandbox, "/api/users/0.1/self/").json()["error_code"].endswith("EXPIRED")


def test_milestones_come_as_a_map_or_a_list():
    with start_sandbox(seed=4, threads=12) as sandbox:
        as_map = get(sandbox, "/api/projects/0.1/milestones/").json()["result"]["milestones"]
        assert isinstance(as_map, dict) and as_map
        assert all("id" not in m for m in as_map.values())  # as in the SDK's fixture
        sandbox.milestones_shape = "list"
        as_list = get(sandbox, "/api/projects/0.1/milestones/").json()["result"]["milestones"]
        assert sorted(str(m["id"]) for m in as_list) == sorted(as_map)


def test_rate_limit_answers_429_with_retry_after():
    with start_sandbox(seed=1, threads=1, rate_limit=1.0, burst=1) as sandbox:
        assert get(sandbox, "/api/users/0.1/self/").status_code == 200
        limited = get(sandbox, "/api/users/0.1/self/")
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
