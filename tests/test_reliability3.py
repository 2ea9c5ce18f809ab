"""Reliability round 3 (issue 27): the key guards every door of the UI's port, wrong keys and
forged forwarding headers do not get a fresh rate-limit bucket, and confirmation-gated actions are
checked on the server.

Each test reproduces a failure of the code before the fix; docs/RELIABILITY.md lists the results.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.app import create_app, is_api_path
from api.app import running as live
from api.security import FAILED_KEYS, RateLimiter
from api.service import Service
from core.config import Config
from index.build import build_folder
from index.embed import VectorEmbeddings
from index.library import DocumentLibrary
from index.trash import Trash
from rag.chain import Pipeline
from tests.helpers import SeedsIndex, UIServer, child_env, start_ui
from ui.gate import COOKIE, SESSION_SECONDS, KeyGate, for_port, session_token, session_valid

KEY = "k3-" + secrets.token_hex(12)
CALL_TIMEOUT = 180
DELEGATES = "كم عدد المندوبين الذين حضروا المؤتمر؟"


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- the gate in process -----------------------------------------------------------------------


async def _ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("inner")


async def _socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("inner")
    await websocket.close()


def gated(rate: tuple[int, float] | None = None, clock: Any = None) -> TestClient:
    inner = Starlette(
        routes=[
            Route("/", _ok),
            Route("/config", _ok),
            Route("/gradio_api/queue/join", _ok, methods=["POST"]),
            Route("/api/documents", _ok),
            WebSocketRoute("/ws", _socket),
        ]
    )
    gate = KeyGate(inner, KEY, RateLimiter(*rate) if rate else None, is_api_path, **({"clock": clock} if clock else {}))
    return TestClient(gate, base_url="http://127.0.0.1:7860", follow_redirects=False)


def test_gate_refuses_every_ui_route_without_the_key() -> None:
    client = gated()
    for method, path in (("GET", "/config"), ("POST", "/gradio_api/queue/join"), ("GET", "/nonexistent")):
        response = client.request(method, path)
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert "/login" in response.json()["error"]["message"]
    page = client.get("/", headers={"accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert client.get("/config", headers=auth()).text == "inner"
    assert client.post("/gradio_api/queue/join", headers=auth()).text == "inner"
    # The API's own paths are left to the API's middleware (here: none, so they pass).
    assert client.get("/api/documents").text == "inner"
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws") as ws:
        ws.receive_text()
    with client.websocket_connect("/ws", headers=auth()) as ws:
        assert ws.receive_text() == "inner"


def test_login_page_sets_a_signed_cookie_that_opens_the_ui() -> None:
    client = gated()
    page = client.get("/login", headers={"accept-language": "ar,en;q=0.5"})
    assert page.status_code == 200 and 'dir="rtl"' in page.text and "مفتاح الوصول" in page.text
    assert "<script" not in page.text
    wrong = client.post("/login", data={"key": KEY + "x"}, headers={"accept-language": "ar"})
    assert wrong.status_code == 401 and "المفتاح غير صحيح" in wrong.text
    assert COOKIE not in wrong.headers.get("set-cookie", "")
    right = client.post("/login", data={"key": KEY})
    assert right.status_code == 303 and right.headers["location"] == "/"
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and f"Max-Age={SESSION_SECONDS}" in cookie
    assert client.get("/config").text == "inner"  # the TestClient keeps the cookie
    assert client.post("/gradio_api/queue/join").text == "inner"


def test_the_login_page_follows_the_language_chosen_in_the_app_and_can_switch() -> None:
    """A new user who chose Arabic in the app met an English login page (its language came only
    from the browser's Accept-Language; a client with none got English) with no way to switch."""
    client = gated()
    # The header switch of the app also keeps the choice in a cookie the login page reads.
    client.cookies.set("rag-lang", "ar")
    page = client.get("/login", headers={"accept-language": "en-US"})
    assert 'dir="rtl"' in page.text and "مفتاح الوصول" in page.text
    assert 'href="/login?lang=en"' in page.text  # a link to the other language, no script
    client.cookies.clear()
    english = client.get("/login?lang=en", headers={"accept-language": "ar"})
    assert 'dir="ltr"' in english.text and 'href="/login?lang=ar"' in english.text
    # A wrong key answered in the language the form was shown in.
    wrong = client.post("/login?lang=ar", data={"key": KEY + "x"}, headers={"accept-language": "en"})
    assert wrong.status_code == 401 and "المفتاح غير صحيح" in wrong.text
    assert 'action="/login?lang=ar"' in client.get("/login?lang=ar").text
    assert 'dir="ltr"' in client.get("/login?lang=fr").text  # anything else: the browser's (none: English)


def test_forged_expired_or_foreign_cookies_are_refused() -> None:
    now = [1_000_000.0]
    client = gated(clock=lambda: now[0])
    good = session_token(KEY, int(now[0]) + 100)
    assert session_valid(good, KEY, now[0])
    expires, signature = good.split(".")
    for bad in (
        f"{int(expires) + 10**6}.{signature}",  # a later expiry under the old signature
        session_token("another-key", int(now[0]) + 100),  # made with another key
        session_token(KEY, int(now[0]) - 1),  # expired
        "x.y",
        "",
        '"; ' + good,
    ):
        client.cookies.clear()
        response = client.get("/config", headers={"cookie": f"{COOKIE}={bad}"})
        assert response.status_code == 401, bad
    client.cookies.clear()
    assert client.get("/config", headers={"cookie": f"{COOKIE}={good}"}).text == "inner"
    now[0] += 101
    client.cookies.clear()
    assert client.get("/config", headers={"cookie": f"{COOKIE}={good}"}).status_code == 401


def test_wrong_keys_are_rate_limited_on_the_ui_port() -> None:
    client = gated()
    allowed = FAILED_KEYS[0]
    codes = [client.get("/config", headers=auth("wrong")).status_code for _ in range(allowed + 5)]
    assert codes[:allowed] == [401] * allowed and set(codes[allowed:]) == {429}, codes
    logins = [client.post("/login", data={"key": "wrong"}).status_code for _ in range(3)]
    assert logins == [429] * 3  # the login form draws on the same count
    assert client.get("/config", headers=auth()).text == "inner"  # the right key still works


def test_gradio_calls_draw_on_the_rate_limit() -> None:
    client = gated(rate=(5, 60.0))
    codes = [client.post("/gradio_api/queue/join", headers=auth()).status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3, codes
    assert client.get("/config", headers=auth()).status_code == 200  # page loads are not counted


def test_wrong_api_keys_are_rate_limited(seeds_pipeline: Pipeline) -> None:
    """Issue 27, point 2: 40 wrong keys in a row were all answered 401, never 429."""
    config = seeds_pipeline.config.replace(api_key=KEY)
    with live(create_app(Service(config, pipeline=seeds_pipeline))) as url:
        codes = [httpx.get(url + "/healthz", headers=auth("wrong"), timeout=30).status_code for _ in range(15)]
        assert codes[: FAILED_KEYS[0]] == [401] * FAILED_KEYS[0] and 429 in codes, codes
        assert httpx.get(url + "/healthz", headers=auth(), timeout=30).status_code == 200


def test_wrong_keys_count_once_per_port_across_the_api_and_the_ui(seeds_pipeline: Pipeline) -> None:
    """Issue 27: the UI's gate and the mounted API each counted wrong keys, so a client guessing
    keys on the UI port got 10 a minute on the API's paths and 10 more on the UI's."""
    api = create_app(Service(seeds_pipeline.config.replace(api_key=KEY), pipeline=seeds_pipeline))
    client = TestClient(for_port(api, api, KEY), base_url="http://127.0.0.1:7860", follow_redirects=False)
    codes = [
        client.get("/healthz" if i % 2 else "/config", headers=auth("wrong")).status_code
        for i in range(FAILED_KEYS[0] + 4)
    ]
    assert codes[: FAILED_KEYS[0]] == [401] * FAILED_KEYS[0] and set(codes[FAILED_KEYS[0] :]) == {429}, codes


# --- the real UI server with a key -------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_ui(tmp_path_factory: pytest.TempPathFactory, seeds_index: SeedsIndex) -> Iterator[tuple[UIServer, Path]]:
    root = tmp_path_factory.mktemp("ui-keyed")
    docs, index = root / "docs", root / "index"
    shutil.copytree(seeds_index.config.docs_dir, docs)
    shutil.copytree(seeds_index.config.index_dir, index)
    env = child_env(RAG_INDEX_DIR=str(index), RAG_DOCS_DIR=str(docs), RAG_API_KEY=KEY, RAG_API_RATE="25/min")
    server = start_ui(env, root, timeout=CALL_TIMEOUT, headers=auth())
    try:
        yield server, docs
        assert "Traceback" not in server.stderr()  # while serving (a client's open stream may be cut at stop)
    finally:
        server.stop()


def _client(server: UIServer, headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.url.rstrip("/"), timeout=CALL_TIMEOUT, headers=headers or {})


def _dependency(config: dict[str, Any], elem_id: str) -> dict[str, Any]:
    """The click handler of the button with this elem_id, as the page finds it."""
    component = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)
    return next(d for d in config["dependencies"] if [component["id"], "click"] in d["targets"])


def _call(http: httpx.Client, config: dict[str, Any], elem_id: str, values: dict[str, Any]) -> httpx.Response | str:
    """Run the button's handler over the queue protocol with values by component type (a bare
    call: no confirmation shown first). Returns the refused response, or the status line."""
    dependency = _dependency(config, elem_id)
    types = {c["id"]: c["type"] for c in config["components"]}
    data = [values.get(types[i]) for i in dependency["inputs"]]
    session = uuid.uuid4().hex
    payload = {"data": data, "event_data": None, "fn_index": dependency["id"], "session_hash": session}
    joined = http.post("/gradio_api/queue/join", json=payload)
    if joined.status_code != 200:
        return joined
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and (message := json.loads(line[5:])).get("msg") == "process_completed":
                outputs = message["output"]["data"]
                return str(next(o for o in outputs if isinstance(o, str)))
    raise AssertionError("the handler never completed")


def test_no_route_on_the_ui_port_answers_without_the_key(keyed_ui: tuple[UIServer, Path]) -> None:
    """Issue 27, point 1: POST /gradio_api/call/answer answered and queue/join removed a document."""
    server, docs = keyed_ui
    before = sorted(p.name for p in docs.iterdir())
    with _client(server, auth()) as keyed:
        config = keyed.get("/config").json()
    with _client(server) as anonymous:
        assert anonymous.get("/config").status_code == 401
        assert anonymous.get("/gradio_api/info").status_code == 401
        assert anonymous.post("/gradio_api/call/answer", json={"data": [DELEGATES]}).status_code == 401
        assert anonymous.post("/gradio_api/upload", files={"files": ("a.txt", b"x")}).status_code == 401
        refused = _call(anonymous, config, "confirm-remove-yes", {"dropdown": before[0], "radio": "en"})
        assert isinstance(refused, httpx.Response) and refused.status_code == 401
        refused = _call(anonymous, config, "confirm-empty-yes", {"radio": "en"})
        assert isinstance(refused, httpx.Response) and refused.status_code == 401
        assert anonymous.get("/", headers={"accept": "text/html"}).headers["location"] == "/login"
        assert anonymous.get("/v1/models").status_code == 401
    assert sorted(p.name for p in docs.iterdir()) == before


def test_confirmations_are_checked_on_the_server(keyed_ui: tuple[UIServer, Path]) -> None:
    """With the key, the confirming handler called on its own (no confirmation shown) removes nothing."""
    server, docs = keyed_ui
    before = sorted(p.name for p in docs.iterdir())
    with _client(server, auth()) as keyed:
        config = keyed.get("/config").json()
        status = _call(keyed, config, "confirm-remove-yes", {"dropdown": before[0], "radio": "en"})
        assert isinstance(status, str) and "confirm" in status.lower(), status
        status = _call(keyed, config, "confirm-empty-yes", {"radio": "en"})
        assert isinstance(status, str) and "confirm" in status.lower(), status
    assert sorted(p.name for p in docs.iterdir()) == before


def test_browser_signs_in_with_the_key_and_scripts_send_it(keyed_ui: tuple[UIServer, Path]) -> None:
    server, _ = keyed_ui
    with _client(server) as browser:
        assert browser.post("/login", data={"key": KEY}).status_code == 303
        assert browser.get("/").status_code == 200
        assert browser.get("/config").status_code == 200
    gradio_client = pytest.importorskip("gradio_client")
    client = gradio_client.Client(
        server.url, verbose=False, analytics_enabled=False, download_files=False, headers=auth()
    )
    try:
        result = client.predict(DELEGATES, api_name="/answer")
    finally:
        client.close()
    assert "800" in result["answer"], result


def test_forged_forwarding_headers_share_one_bucket(keyed_ui: tuple[UIServer, Path]) -> None:
    """Issue 27, point 2: each forged X-Forwarded-For got a fresh bucket (35 x 200 where 30 were allowed).
    Last in this module: it spends the server's rate for 127.0.0.1."""
    server, _ = keyed_ui
    with _client(server, auth()) as http:
        codes = [http.get("/healthz", headers={"x-forwarded-for": f"10.9.{i}.1"}).status_code for i in range(30)]
        assert 429 in codes, codes
        joins = [http.post("/gradio_api/queue/join", json={}).status_code for _ in range(30)]
        assert 429 in joins, joins  # Gradio's calls draw on the rate too


def test_a_text_part_that_is_not_a_string_is_refused(seeds_pipeline: Pipeline) -> None:
    """Issue 27, point 8: `"text": null` was asked as the question "None", and {"x": 1} as "{'x': 1}"."""
    with live(create_app(seeds_pipeline)) as url:
        for text in (None, {"x": 1}, 123, ["سؤال"]):
            body = {"model": "arabic-rag", "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}
            response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
            assert response.status_code == 400, (text, response.text)
            assert response.json()["error"]["code"] == "invalid_content"
            assert "string" in response.json()["error"]["message"]
        fine = [{"role": "user", "content": [{"type": "text", "text": DELEGATES}]}]
        reply = httpx.post(url + "/v1/chat/completions", json={"model": "arabic-rag", "messages": fine}, timeout=120)
        assert reply.status_code == 200 and "800" in reply.json()["choices"][0]["message"]["content"]


@pytest.fixture
def small_library(tmp_path: Path, embedder: VectorEmbeddings) -> Service:
    """A documents folder with one document at the top and one in a subfolder, indexed."""
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "top.txt").write_text("مهرجان الزيتون\nأقيم مهرجان الزيتون في الجوف.\n", encoding="utf-8")
    (docs / "sub" / "inner.txt").write_text("مهرجان التمور\nأقيم مهرجان التمور في بريدة.\n", encoding="utf-8")
    config = Config(docs_dir=docs, index_dir=tmp_path / "index")
    index, _ = build_folder(config, embedder)
    return Service(config, pipeline=Pipeline(config, index=index))


def test_a_document_in_a_subfolder_is_removed_through_the_api(small_library: Service) -> None:
    """Issue 27, point 7: GET /api/documents listed sub/inner.txt, and DELETE of it was a 400."""
    docs = small_library.config.docs_dir
    with live(create_app(small_library)) as url:
        names = [d["name"] for d in httpx.get(url + "/api/documents", timeout=30).json()["documents"]]
        assert "sub/inner.txt" in names
        # Encoded, so that the client does not resolve them itself before sending.
        for bad in ("sub%2F..%2Ftop.txt", "sub%2F%2Finner.txt", "%2Fetc%2Fpasswd", "sub%5Cinner.txt"):
            assert httpx.delete(f"{url}/api/documents/{bad}", timeout=30).status_code == 400, bad
        assert (docs / "top.txt").exists()
        removed = httpx.delete(url + "/api/documents/sub/inner.txt", timeout=60)
        assert removed.status_code == 200, removed.text
        assert not (docs / "sub" / "inner.txt").exists() and (docs / "top.txt").exists()
        trash = httpx.get(url + "/api/trash", timeout=30).json()["items"]
        assert [i["id"] for i in trash if i["name"] == "sub/inner.txt"] == [removed.json()["trash_id"]]
        restored = httpx.post(f"{url}/api/trash/{removed.json()['trash_id']}/restore", timeout=60)
        assert restored.status_code == 200 and (docs / "sub" / "inner.txt").exists()


def test_concurrent_removals_of_one_name_remove_it_once(small_library: Service) -> None:
    """Issue 27, point 6: six concurrent DELETEs of one name all returned 200 with the same trash_id."""
    with live(create_app(small_library)) as url, ThreadPoolExecutor(max_workers=6) as pool:
        replies = list(pool.map(lambda _: httpx.delete(url + "/api/documents/top.txt", timeout=60), range(6)))
        codes = sorted(r.status_code for r in replies)
        assert codes == [200, 404, 404, 404, 404, 404], codes
        (winner,) = [r.json() for r in replies if r.status_code == 200]
        trash = httpx.get(url + "/api/trash", timeout=30).json()["items"]
        assert [i["id"] for i in trash if i["name"] == "top.txt"] == [winner["trash_id"]]


@pytest.mark.parametrize("how", ["rename refused", "copied across devices, source not removable"])
def test_removing_from_a_read_only_folder_removes_nothing_and_says_so(
    small_library: Service, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Issue 27, point 4: DELETE from a read-only folder was a 500; the file stayed in the folder
    and the index while the trash listed it, and restoring it later indexed a duplicate."""
    docs = small_library.config.docs_dir
    unlink = Path.unlink

    def rename(source: Any, target: Any) -> None:
        if how == "rename refused":
            raise PermissionError(errno.EACCES, "Permission denied")
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def guarded_unlink(path: Path, missing_ok: bool = False) -> None:
        if path.parent == docs:
            raise PermissionError(errno.EACCES, "Permission denied")
        unlink(path, missing_ok)

    monkeypatch.setattr(os, "rename", rename)  # root ignores a folder's mode: refuse as the OS would
    monkeypatch.setattr(Path, "unlink", guarded_unlink)
    with live(create_app(small_library)) as url:
        reply = httpx.delete(url + "/api/documents/top.txt", timeout=60)
        assert reply.status_code == 409, reply.text
        error = reply.json()["error"]
        assert error["code"] == "remove_failed" and "Permission denied" in error["message"]
        assert (docs / "top.txt").exists()
        assert httpx.get(url + "/api/trash", timeout=30).json()["items"] == []
        names = [d["name"] for d in httpx.get(url + "/api/documents", timeout=30).json()["documents"]]
        assert "top.txt" in names
    assert not list(Trash(small_library.config.index_dir, docs).folder.glob("*/*.txt"))  # no copy left
    assert small_library.pipeline is not None
    library = DocumentLibrary(small_library.pipeline, max_bytes=2**20)
    said = library.remove("top.txt", "ar")
    assert said.startswith("لم يُحذف شيء") and "top.txt" in library.names() and not library.trash.items()


def test_a_folder_changed_behind_the_index_is_reindexed_at_start(
    tmp_path: Path, embedder: VectorEmbeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27, point 3: the API killed while embedding a same-name upload restarted serving v1
    while the folder held v2 (a question about v2 abstained, /healthz said ok)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "victim.txt").write_text("مهرجان الزيتون\nأقيم مهرجان الزيتون في الجوف.\n", encoding="utf-8")
    config = Config(docs_dir=docs, index_dir=tmp_path / "index")
    build_folder(config, embedder)
    # What the crash left: the new version in the folder, the index still of the old one.
    (docs / "victim.txt").write_text("مهرجان التمور\nأقيم مهرجان التمور في بريدة بحضور ألف زائر.\n", encoding="utf-8")
    (docs / "broken.pdf").write_bytes(b"not a pdf")  # unreadable: reported, not indexed
    pipeline = Pipeline(config)
    assert pipeline.drift.changed == [] and pipeline.drift.new == ["broken.pdf"]
    assert "بريدة" in pipeline.ask("أين أقيم مهرجان التمور؟").answer
    with live(create_app(Service(config, pipeline=pipeline))) as url:
        health = httpx.get(url + "/healthz", timeout=30).json()
        assert health["status"] == "ok" and health["folder"]["not_indexed"] == ["broken.pdf"]

    # An index that cannot be updated (read-only, say) still serves, and says it is stale.
    (docs / "victim.txt").write_text("مهرجان العسل\nأقيم مهرجان العسل في الباحة.\n", encoding="utf-8")

    def read_only(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("index.build.build_folder", read_only)
    stale = Pipeline(config)
    assert stale.drift.changed == ["victim.txt"]
    with live(create_app(Service(config, pipeline=stale))) as url:
        health = httpx.get(url + "/healthz", timeout=30).json()
        assert health["status"] == "stale" and health["folder"]["changed"] == ["victim.txt"]


def test_soak_with_a_key_no_route_on_the_ui_port_answers_without_it(tmp_path: Path, seeds_index: SeedsIndex) -> None:
    """Issue 27, done when: the soak (asks against uploads and removals by concurrent clients)
    with a key set, while another client tries every kind of route without it, or with a wrong
    one: not one of those tries is answered, and the folder ends as it began."""
    docs, index = tmp_path / "docs", tmp_path / "index"
    shutil.copytree(seeds_index.config.docs_dir, docs)
    shutil.copytree(seeds_index.config.index_dir, index)
    env = child_env(RAG_INDEX_DIR=str(index), RAG_DOCS_DIR=str(docs), RAG_API_KEY=KEY, RAG_API_RATE="10000/min")
    server = start_ui(env, tmp_path, timeout=CALL_TIMEOUT, headers=auth())
    before = sorted(p.name for p in docs.iterdir())
    url = server.url.rstrip("/")
    errors: list[str] = []
    done = threading.Event()
    tries: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/config", {}),
        ("GET", "/gradio_api/info", {}),
        ("POST", "/gradio_api/call/answer", {"json": {"data": [DELEGATES]}}),
        ("POST", "/gradio_api/queue/join", {"json": {"data": [], "fn_index": 0, "session_hash": "x"}}),
        ("POST", "/gradio_api/upload", {"files": {"files": ("a.txt", b"x")}}),
        ("GET", "/api/documents", {}),
        ("POST", "/api/ask", {"json": {"question": DELEGATES}}),
        ("POST", "/api/documents", {"files": [("files", ("evil.txt", "نص".encode(), "text/plain"))]}),
        ("DELETE", f"/api/documents/{before[0]}", {}),
        ("GET", "/api/trash", {}),
        ("POST", "/api/trash/x/restore", {}),
        ("GET", "/v1/models", {}),
        ("POST", "/v1/chat/completions", {"json": {"model": "arabic-rag", "messages": []}}),
        ("GET", "/openapi.json", {}),
        ("GET", "/docs", {}),
    ]

    def probe() -> None:
        tried = 0
        with httpx.Client(base_url=url, timeout=CALL_TIMEOUT) as anonymous:
            while not done.is_set() or tried < len(tries) * 2:
                method, path, extra = tries[tried % len(tries)]
                headers = {} if tried % 2 else auth("wrong-" + KEY)
                reply = anonymous.request(method, path, headers=headers, **extra)
                if reply.status_code not in (401, 429):
                    errors.append(f"{method} {path} without the key: {reply.status_code} {reply.text[:120]}")
                tried += 1

    def churn() -> None:
        for round_ in range(4):
            body = f"مهرجان الجولة {round_}\nأقيم مهرجان الجولة {round_} في مدينة الاختبار.\n".encode()
            added = httpx.post(
                url + "/api/documents",
                files=[("files", (f"soak-{round_}.txt", body, "text/plain"))],
                headers=auth(),
                timeout=CALL_TIMEOUT,
            )
            removed = httpx.delete(f"{url}/api/documents/soak-{round_}.txt", headers=auth(), timeout=CALL_TIMEOUT)
            if added.status_code != 200 or removed.status_code != 200:
                errors.append(f"round {round_}: {added.status_code} {removed.status_code}")

    def ask(_: int) -> None:
        reply = httpx.post(url + "/api/ask", json={"question": DELEGATES}, headers=auth(), timeout=CALL_TIMEOUT)
        if reply.status_code != 200 or "800" not in reply.json()["answer"]:
            errors.append(f"ask: {reply.status_code} {reply.text[:120]}")

    try:
        with ThreadPoolExecutor(max_workers=22) as pool:
            prober = pool.submit(probe)
            writer = pool.submit(churn)
            list(pool.map(ask, range(40), timeout=CALL_TIMEOUT * 2))
            writer.result(timeout=CALL_TIMEOUT * 2)
            done.set()
            prober.result(timeout=CALL_TIMEOUT)
        assert not errors, errors[:10]
        assert sorted(p.name for p in docs.iterdir()) == before
    finally:
        done.set()
        server.stop()
    assert "Traceback" not in server.stderr(), server.stderr()[-3000:]
