"""No request gets a 500: the connections service under hostile input, a database outage and
generated requests, over real HTTP to the real process on a real PostgreSQL.

First the cases once seen failing, each as a fixed example: NUL bytes, a lone surrogate, NaN and
Infinity, bodies of megabytes, names of whitespace, a 405's Allow. Then an outage: the server
is stopped under the running service and started again. Last, schemathesis generates requests
from the service's own OpenAPI document and checks every response against it. Every response
of every test must be a status the document declares for its operation, and the service's log
must hold no traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from connections_service.models import TEXT_PATTERN, storable_text
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dbledger.testing import temporary_postgres
from tests.helpers import query
from tests.service_helpers import BEARER, Service, password_of, service_starter

ORG = "org_33fSYwlyUqkYiSD2kBt7hqBz7dE"
SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")
JSON = "application/json"
ROWS = "SELECT (SELECT count(*) FROM organizations), (SELECT count(*) FROM platform_connections)"


@pytest.fixture(scope="module")
def database(pg_server: Any) -> Iterator[str]:
    """One database for the module's service (the tests here add rows, never depend on none)."""
    name = f"edges{os.getpid()}"
    url: str = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


@pytest.fixture(scope="module")
def service(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with service_starter(tmp_path_factory.mktemp("edges"), [password_of(database)]) as start:
        running = start(database, env={"DATABASE_WAIT": "1"})
        running.wait_healthy()
        with httpx.Client(base_url=running.url) as client:
            created = client.post("/api/organizations", json={"id": ORG, "name": "Acme"})
            assert created.status_code == 201, created.text
        yield running
        assert "Traceback" not in running.log
        assert "Exception in ASGI application" not in running.log


def operation_patterns(openapi: dict[str, Any]) -> list[tuple[re.Pattern[str], str, set[str]]]:
    """(path regex, method, declared statuses) for each operation of an OpenAPI document."""
    found = []
    for template, operations in openapi["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        for method, operation in operations.items():
            found.append((pattern, method.upper(), set(operation["responses"])))
    return found


@contextmanager
def api(service: Service) -> Iterator[httpx.Client]:
    """A client whose every response must be a status the OpenAPI document declares for its
    operation (a 405 for a method the path lacks, naming every method it has)."""
    responses: list[httpx.Response] = []
    with httpx.Client(
        base_url=service.url, timeout=20, event_hooks={"response": [responses.append]}
    ) as client:
        yield client
    operations = operation_patterns(httpx.get(f"{service.url}/openapi.json").json())
    for response in responses:
        request = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        assert response.status_code != 500, request
        methods = {m for pattern, m, _ in operations if pattern.match(response.request.url.path)}
        if response.request.method not in methods:
            assert response.status_code == 405, request
            assert set(response.headers["allow"].split(", ")) == methods, request
            continue
        [declared] = [
            codes
            for pattern, method, codes in operations
            if pattern.match(response.request.url.path) and method == response.request.method
        ]
        assert str(response.status_code) in declared, f"{request}: not declared, only {sorted(declared)}"


def strict_json(response: httpx.Response) -> Any:
    """The body, read as strict JSON: valid UTF-8, and no NaN or Infinity."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in {response.text[:200]}")

    return json.loads(response.content.decode("utf-8"), parse_constant=refuse)


def refusal(response: httpx.Response) -> dict[str, Any]:
    """The one error of a 422, read strictly."""
    assert response.status_code == 422, response.text
    [error] = strict_json(response)["detail"]
    assert isinstance(error, dict)
    return error


def connection(**changes: Any) -> dict[str, Any]:
    return {
        "organization_id": ORG,
        "platform_type": "google",
        "platform_user_id": "103947561234",
        "display_name": "Google Workspace",
        **changes,
    }


def post_raw(client: httpx.Client, path: str, body: bytes, content_type: str = JSON) -> httpx.Response:
    return client.post(path, content=body, headers={"content-type": content_type})


# -- input the database cannot store -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "path", "body"),
    [
        ("name", "/api/organizations", {"name": "a\u0000b"}),
        ("platform_user_id", "/api/connections", connection(platform_user_id="U1\u0000")),
        ("display_name", "/api/connections", connection(display_name="\u0000")),
    ],
)
def test_a_nul_byte_in_a_field_is_a_422_naming_it(
    service: Service, database: str, field: str, path: str, body: dict[str, Any]
) -> None:
    rows = query(
        database, "SELECT (SELECT count(*) FROM organizations), (SELECT count(*) FROM platform_connections)"
    )
    with api(service) as client:
        error = refusal(client.post(path, json=body))
    assert error["loc"] == ["body", field]
    assert "control character U+0000" in error["msg"]
    assert (
        query(
            database,
            "SELECT (SELECT count(*) FROM organizations), (SELECT count(*) FROM platform_connections)",
        )
        == rows
    )


def test_a_nul_byte_in_a_query_parameter_is_a_422_naming_it(service: Service) -> None:
    with api(service) as client:
        audit = refusal(client.get("/api/audit-logs?resource_id=%00"))
        listing = refusal(client.get("/api/connections?organization_id=%00"))
    assert audit["loc"] == ["query", "resource_id"]
    assert audit["input"] == "\u0000"  # written as \u0000 in JSON, so it is safe to quote
    assert listing["loc"] == ["query", "organization_id"]


def test_a_lone_surrogate_is_refused_and_quoted_escaped(service: Service) -> None:
    with api(service) as client:
        error = refusal(post_raw(client, "/api/organizations", b'{"name": "a\\ud800b"}'))
        in_a_key = refusal(post_raw(client, "/api/organizations", b'{"name": "x", "\\udfff": 1}'))
    assert error["loc"] == ["body", "name"]
    assert error["input"] == "a\\ud800b"  # the six characters backslash, u, d, 8, 0, 0
    assert in_a_key["loc"][0] == "body"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_anywhere_in_a_body_are_a_422(service: Service, constant: str) -> None:
    with api(service) as client:
        known = refusal(post_raw(client, "/api/organizations", f'{{"name": {constant}}}'.encode()))
        unknown = refusal(
            post_raw(client, "/api/organizations", f'{{"name": "x", "extra": {constant}}}'.encode())
        )
        nested = refusal(
            post_raw(
                client, "/api/organizations", f'{{"name": "x", "extra": [{{"a": {constant}}}]}}'.encode()
            )
        )
    assert (known["loc"], known["type"]) == (["body", "name"], "string_type")
    assert known["input"] in ("NaN", "Infinity", "-Infinity")
    assert (unknown["loc"], unknown["type"]) == (["body", "extra"], "extra_forbidden")
    assert nested["loc"] == ["body", "extra"]
    assert "NaN" in nested["input"] or "Infinity" in nested["input"]


@pytest.mark.parametrize(
    "name",
    [" ", "   ", "\t", "\n", "\u3000", "\u00a0\u2003", "\ufeff", "a\nb", "tab\there", "\u007f", "\u0085"],
)
def test_a_name_of_whitespace_or_with_a_control_character_is_refused(service: Service, name: str) -> None:
    with api(service) as client:
        error = refusal(client.post("/api/organizations", json={"name": name}))
        as_display_name = refusal(client.post("/api/connections", json=connection(display_name=name)))
    assert error["loc"] == ["body", "name"]
    assert as_display_name["loc"] == ["body", "display_name"]
    assert re.search(r"only whitespace|control character U\+[0-9A-F]{4}", error["msg"]), error["msg"]


def test_names_people_write_are_accepted(service: Service) -> None:
    names = ["Zoë's Café", "株式会社", "🏳️‍🌈 team", "a b", "x" * 255, " padded ", "zero\u200bwidth", "𝔘𝔫𝔦"]
    with api(service) as client:
        created = [client.post("/api/organizations", json={"name": name}) for name in names]
    assert [r.status_code for r in created] == [201] * len(names)
    assert [r.json()["name"] for r in created] == names


@settings(max_examples=2000, deadline=None, database=None, derandomize=True)
@given(st.text(alphabet=st.characters(codec=None, max_codepoint=0x3100), max_size=6))
@example("\ufeff")
@example("\u180e")
@example("\x1c")
@example("\u2028x")
def test_the_documented_pattern_and_the_check_agree(text: str) -> None:
    """What the OpenAPI document promises (TEXT_PATTERN) is what the service accepts."""
    try:
        storable_text(text)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == (re.fullmatch(TEXT_PATTERN, text) is not None and not has_surrogate(text))


def has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


# -- sizes ----------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_a_413_declared_or_chunked(service: Service) -> None:
    huge = json.dumps({"name": "x" * 5_000_000}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(huge), 16_384):
            yield huge[start : start + 16_384]

    with api(service) as client:
        declared = post_raw(client, "/api/organizations", huge)
        chunked = client.post(
            "/api/organizations", content=chunks(), headers={"content-type": "application/json"}
        )
    for response in (declared, chunked):
        assert response.status_code == 413
        assert strict_json(response) == {
            "detail": "the request body is larger than 65536 bytes, the most this service accepts"
        }


def test_a_422_quotes_a_bounded_excerpt_of_a_long_field(service: Service) -> None:
    with api(service) as client:
        response = client.post("/api/organizations", json={"name": "y" * 60_000})
        nested = client.post("/api/organizations", json={"name": "x", "extra": {"deep": ["z" * 30_000]}})
    error = refusal(response)
    assert error["type"] == "string_too_long"
    assert error["input"] == "y" * 64 + "…"
    assert len(response.content) < 500
    assert len(nested.content) < 500


# -- bodies that are not JSON ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\xff\xfe{", JSON),
        (b"\xff\xfe{", "text/plain"),
        (b'{"name": "caf\xe9"}', JSON),
        (b"[" * 5000 + b"]" * 5000, JSON),
        (b'{"name": ' + b"9" * 5000 + b"}", JSON),
        (b"", JSON),
        (b"null", JSON),
    ],
)
def test_a_body_that_is_not_readable_json_is_a_4xx(service: Service, body: bytes, content_type: str) -> None:
    with api(service) as client:
        response = post_raw(client, "/api/organizations", body, content_type)
    assert response.status_code in (400, 422), response.text
    assert strict_json(response)["detail"]


# -- methods ---------------------------------------------------------------------------------------


def test_a_405_names_every_method_of_the_path(service: Service) -> None:
    with api(service) as client:
        collection = client.put("/api/connections")
        item = client.patch("/api/connections/google-1")
        health = client.post("/health")
    assert collection.status_code == item.status_code == health.status_code == 405
    assert collection.headers["allow"] == "GET, POST"
    assert item.headers["allow"] == "DELETE, GET"
    assert health.headers["allow"] == "GET"


def test_audit_data_that_is_not_an_object_is_still_served(service: Service, database: str) -> None:
    query(
        database,
        "INSERT INTO audit_logs (id, event_type, resource_type, resource_id, event_data) VALUES"
        " ('a1', 'manual', 'note', 'odd-data', '[1, 2]'), ('a2', 'manual', 'note', 'odd-data', '\"s\"')",
    )
    with api(service) as client:
        trail = client.get("/api/audit-logs", params={"resource_id": "odd-data"})
    assert trail.status_code == 200
    assert sorted(str(entry["event_data"]) for entry in trail.json()) == ["[1, 2]", "s"]


def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_clients_host(service: Service) -> None:
    response = httpx.get(f"{service.url}/health/", headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers


# -- the version endpoint --------------------------------------------------------------------------


def test_the_version_endpoint_needs_the_token_and_shows_no_location(service: Service, database: str) -> None:
    with api(service) as client:
        anonymous = client.get("/api/db/version")
        version = client.get("/api/db/version", headers=BEARER)
    assert anonymous.status_code == 401
    assert version.status_code == 200
    assert strict_json(version)["version"] == 4
    settings = psycopg.conninfo.conninfo_to_dict(database)
    for secret_or_location in (
        settings["password"],
        settings["user"],
        settings["dbname"],
        str(settings["port"]),
    ):
        assert str(secret_or_location) not in version.text
    assert "connections_service" not in version.text  # the installed package's path


# -- an outage --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_an_outage_gives_prompt_503s_and_the_first_request_after_it_succeeds(tmp_path: Path) -> None:
    with temporary_postgres() as cluster, service_starter(tmp_path, [cluster.password]) as start:
        url = cluster.create_database("app")
        service = start(url, env={"DATABASE_WAIT": "1"})
        service.wait_healthy()
        with api(service) as client:
            assert client.post("/api/organizations", json={"id": ORG, "name": "Acme"}).status_code == 201
            cluster.stop()

            # Each answer comes within the wait (1 s) and a connection attempt, not the pool's
            # former 30 s; the client's own timeout (20 s) would fail the test otherwise.
            during = [client.get("/api/connections", params={"organization_id": ORG}) for _ in range(3)]
            during.append(client.post("/api/organizations", json={"name": "during"}))
            during.append(client.delete("/api/connections/google-1"))
            for response in during:
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                assert strict_json(response)["detail"].startswith("database unavailable: ")
            for path, headers in (("/health", None), ("/api/db/version", BEARER)):
                down = client.get(path, headers=headers)
                assert down.status_code == 503
                assert strict_json(down) == {
                    "status": "unavailable",
                    "reasons": ["the database is unreachable: the service's log has the details"],
                }

            cluster.start()
            # The first request after the database is back is served: no backoff left to sit out.
            back = client.get("/api/connections", params={"organization_id": ORG})
            assert back.status_code == 200, back.text
            health = client.get("/health")
            assert health.status_code == 200, health.text
            assert client.post("/api/organizations", json={"name": "after"}).status_code == 201
        assert "Traceback" not in service.log
        # The log, not the client, is told what failed and where.
        assert "no database connection within 1 s" in service.log
        assert f"port {cluster.port} failed" in service.log


# -- generated requests ------------------------------------------------------------------------------


def test_generated_requests_from_the_openapi_document_get_declared_answers(
    service: Service, tmp_path: Path
) -> None:
    """schemathesis: valid and invalid requests for every operation, then stateful sequences
    (create, read, delete) from links it infers; every response is checked against the
    document. Deterministic, and bounded to a few hundred cases so CI stays quick."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(SCHEMATHESIS_CONFIG),
            "run",
            f"{service.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "40",
            "--generation-deterministic",
            "--header",
            f"Authorization: {BEARER['Authorization']}",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(r"\b(\d+) generated, \1 passed", output), output
