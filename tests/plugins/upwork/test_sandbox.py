"""The sandbox itself behaves like Upwork where the plugin depends on it (raw HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from plugins.upwork import queries
from plugins.upwork.sandbox import ManualClock, Sandbox, start_sandbox


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sandbox(clock: ManualClock) -> Iterator[Sandbox]:
    with start_sandbox(seed=9, threads=4, messages_per_thread=5, clock=clock) as box:
        yield box


def token(sandbox: Sandbox, **form: str) -> requests.Response:
    body = {"client_id": sandbox.client_id, "client_secret": sandbox.client_secret, **form}
    return requests.post(sandbox.token_url, data={k: v for k, v in body.items() if v}, timeout=10)


def gql(sandbox: Sandbox, access: str, query: str, variables: dict[str, Any] | None = None
        ) -> requests.Response:
    return requests.post(sandbox.api_url, json={"query": query, "variables": variables or {}},
                         headers={"Authorization": f"Bearer {access}"}, timeout=10)


def test_refresh_rotation_cuts_the_old_token_to_a_day(sandbox: Sandbox, clock: ManualClock) -> None:
    first = sandbox.issue_tokens()
    answer = token(sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert answer.status_code == 200
    second = answer.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["token_type"] == "Bearer" and second["expires_in"] == "86400"
    clock.advance(23 * 3600)  # the old one still works within the grace day...
    assert token(sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"]).ok
    clock.advance(2 * 3600)  # ...and not after it
    dead = token(sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert dead.status_code == 400
    assert dead.json() == {"error": "invalid_grant",
                           "error_description": "Refresh token is expired or revoked or not registered"}
    assert token(sandbox, grant_type="refresh_token", refresh_token=second["refresh_token"]).ok


def test_refresh_token_lives_14_days(sandbox: Sandbox, clock: ManualClock) -> None:
    tokens = sandbox.issue_tokens()
    clock.advance(14 * 86400 + 1)
    expired = token(sandbox, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert expired.status_code == 400


def test_token_endpoint_requires_client_credentials(sandbox: Sandbox) -> None:
    tokens = sandbox.issue_tokens()
    missing = requests.post(sandbox.token_url, data={"grant_type": "refresh_token",
                                                     "refresh_token": tokens["refresh_token"]}, timeout=10)
    assert missing.status_code == 400 and "Missing parameters: client_id" in missing.text
    wrong = token(sandbox, grant_type="refresh_token", refresh_token=tokens["refresh_token"],
                  client_secret="nope")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_authorize_redirects_with_code_and_state(sandbox: Sandbox) -> None:
    answer = requests.get(sandbox.authorize_url, params={
        "response_type": "code", "client_id": sandbox.client_id,
        "redirect_uri": "https://app.example/cb", "state": "xyz"}, allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith("https://app.example/cb?code=") and location.endswith("&state=xyz")
    code = location.split("code=")[1].split("&")[0]
    wrong_uri = token(sandbox, grant_type="authorization_code", code=code, redirect_uri="https://evil/cb")
    assert wrong_uri.status_code == 400
    # a code is single-use: the failed attempt above consumed it
    again = token(sandbox, grant_type="authorization_code", code=code, redirect_uri="https://app.example/cb")
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_graphql_needs_a_live_bearer_token(sandbox: Sandbox, clock: ManualClock) -> None:
    assert requests.post(sandbox.api_url, json={"query": queries.VIEWER}, timeout=10).status_code == 401
    access = sandbox.issue_tokens()["access_token"]
    ok = gql(sandbox, access, queries.VIEWER)
    assert ok.status_code == 200
    assert ok.json() == {"data": {"user": {"id": sandbox.owner.id, "name": "Dana W."}}}
    clock.advance(86400)
    assert gql(sandbox, access, queries.VIEWER).status_code == 401


def test_connections_page_with_opaque_cursors_newest_first(sandbox: Sandbox) -> None:
    access = sandbox.issue_tokens()["access_token"]
    room = next(iter(sandbox.rooms.values()))
    seen: list[str] = []
    after = None
    while True:
        page: dict[str, Any] = {"first": 2, **({"after": after} if after else {})}
        body = gql(sandbox, access, queries.ROOM_STORIES, {
            "filter": {"roomId_eq": room.id, "storyFilter": {"pagination": page}}}).json()
        conn = body["data"]["roomStories"]
        assert conn["totalCount"] == 5
        seen += [e["node"]["id"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert seen == [s.id for s in reversed(room.stories)]
    node_keys = set(body["data"]["roomStories"]["edges"][0]["node"])
    assert node_keys == {"id", "createdDateTime", "updatedDateTime", "message", "user", "attachments"}


def test_bad_variables_give_validation_errors_with_http_200(sandbox: Sandbox) -> None:
    access = sandbox.issue_tokens()["access_token"]
    too_many = gql(sandbox, access, queries.ROOM_LIST, {"pagination": {"first": 500}})
    assert too_many.status_code == 200
    error = too_many.json()["errors"][0]
    assert error["extensions"]["classification"] == "ValidationError" and "first" in error["message"]
    no_room = gql(sandbox, access, queries.ROOM_STORIES, {"filter": {}})
    assert "roomId_eq" in no_room.json()["errors"][0]["message"]
    ids = gql(sandbox, access, queries.CONTRACTS, {"ids": [str(i) for i in range(11)]})
    assert "max size is 10" in ids.json()["errors"][0]["message"]
    syntax = gql(sandbox, access, "query { roomList { edges { node { id } }")
    assert syntax.json()["errors"][0]["extensions"]["classification"] == "InvalidSyntax"


def test_every_plugin_query_validates_against_the_trimmed_schema() -> None:
    from graphql import OperationType, parse, validate

    from plugins.upwork.sandbox import schema

    for name, query in queries.OPERATIONS.items():
        document = parse(query)
        assert [e.message for e in validate(schema(), document)] == [], name
        (op,) = document.definitions
        expected = OperationType.MUTATION if name == "RetainerSendStory" else OperationType.QUERY
        assert (op.operation, op.name.value) == (expected, name)  # type: ignore[attr-defined]


def test_unknown_fields_fail_as_upwork_fails_them(sandbox: Sandbox) -> None:
    """The two fields the old queries asked for: HTTP 200, a ValidationError, no data."""
    access = sandbox.issue_tokens()["access_token"]
    viewer = gql(sandbox, access, "query RetainerViewer { user { id name publicUrl } }")
    assert viewer.status_code == 200
    body = viewer.json()
    assert body.get("data") is None
    assert body["errors"][0]["extensions"]["classification"] == "ValidationError"
    assert "publicUrl" in body["errors"][0]["message"] and "CurrentUser" in body["errors"][0]["message"]
    rooms = gql(sandbox, access, "query { roomList { edges { cursor node { id } } } }").json()
    assert rooms.get("data") is None and "RoomEdge" in rooms["errors"][0]["message"]


def test_errors_come_alongside_data(sandbox: Sandbox) -> None:
    access = sandbox.issue_tokens()["access_token"]
    sandbox.denied["contractList"] = "User has no access to contracts"
    query = 'query { user { id } contractList(ids: ["1"]) { contracts { id } } }'
    both = gql(sandbox, access, query).json()
    assert both["data"] == {"user": {"id": sandbox.owner.id}, "contractList": None}
    assert both["errors"][0]["extensions"]["classification"] == "PermissionDenied"
    assert both["errors"][0]["path"] == ["contractList"]
    room = next(iter(sandbox.rooms.values()))
    sandbox.unresolvable_authors.add(room.stories[0].id)
    stories = gql(sandbox, access, queries.ROOM_STORIES, {"filter": {"roomId_eq": room.id}}).json()
    nodes = [e["node"] for e in stories["data"]["roomStories"]["edges"]]
    assert nodes[-1] is None and all(nodes[:-1])  # the oldest story's node is nulled
    assert stories["errors"][0]["path"][-1] == "user"


def test_server_side_rate_limit_answers_429_with_retry_after() -> None:
    with start_sandbox(seed=1, threads=1, messages_per_thread=1, rate_limit=3) as sandbox:
        answers = [requests.post(sandbox.api_url, json={}, timeout=10) for _ in range(5)]
        assert [a.status_code for a in answers].count(429) == 2
        assert answers[-1].headers["Retry-After"] == "1"


def test_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Sandbox(host="0.0.0.0")
