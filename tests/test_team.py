"""The team server (`--accept-forwarded`): real daemons, real HTTP, real SQLite files.

Batches are built with the sender's own `build_body`, so what is tested is
what a forwarding daemon sends; the numbers asserted are computed by hand.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import RunningDaemon, assistant, daemon_on, start_daemon, write_lines

from claude_usaged.daemon import StartupError
from claude_usaged.forwarder import build_body
from claude_usaged.team import team_dir

TOKEN = "team-secret-token"
SECRET = "CONTENT-7d2e-never-stored-on-a-team-server"
MACHINE = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
AGENT = {"machine_id": MACHINE, "hostname": "laptop", "version": "0.1.0"}


def snap(
    key: str,
    ts_ms: int,
    inp: int,
    out: int,
    *,
    message_id: str | None = None,
    sidechain: bool = False,
    session: str = "s1",
    project: str = "/home/dev/api",
    model: str = "claude-sonnet-4-5-20250929",
    cc: int = 0,
    cc_1h: int = 0,
    cr: int = 0,
) -> tuple[Any, ...]:
    """A snapshot row as the outbox reads it (see `outbox.SnapshotRow`)."""
    return (
        key, ts_ms, model, session, project, sidechain, inp, out, cc, cr, 0, None,
        message_id or key, cc_1h, None, None,
    )  # fmt: skip


T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def body(rows: list[tuple[Any, ...]], agent: dict[str, str] = AGENT, batch: str = "b1") -> bytes:
    return build_body(agent, batch, T0, rows)


async def post(
    running: RunningDaemon,
    data: bytes,
    *,
    key: str | None = None,
    token: str | None = TOKEN,
    path: str = "/v1/ingest",
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = f'"{key}"'
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body: bytes | io.BytesIO = io.BytesIO(data) if len(data) > 1 << 20 else data
    async with running.http.post(running.url + path, data=body, headers=headers) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


@pytest.fixture
async def team(tmp_path: Path) -> Any:
    root = tmp_path / "team-claude"
    (root / "projects").mkdir(parents=True)
    async with daemon_on(
        root, tmp_path / "team" / "usage.sqlite3", accept_forwarded=True, ingest_token=TOKEN
    ) as server:
        yield server


async def test_a_batch_sent_twice_counts_once_and_a_replay_gets_the_first_answer(
    team: RunningDaemon,
) -> None:
    data = body([snap("m1:r1", T0, 100, 20), snap("m2:r2", T0 + 60_000, 300, 40, session="s2")])
    status, first, headers = await post(team, data, key="k-1")
    assert status == 200
    assert first == {
        "status": "ok",
        "machine_id": MACHINE,
        "batch_id": "b1",
        "projects": 1,
        "sessions": 2,
        "snapshots": 2,
        "changed": 2,
    }
    assert "Idempotent-Replayed" not in headers
    status, again, headers = await post(team, data, key="k-1")
    assert (status, again, headers["Idempotent-Replayed"]) == (200, first, "true")
    # the same batch under another key (a sender that lost its batch): upserted, changes nothing
    status, third, _ = await post(team, data, key="k-2")
    assert (status, third["changed"]) == (200, 0)
    stats = await team.get("/stats")
    assert stats["total_tokens"] == 460
    assert (await team.get(f"/stats?machine={MACHINE}"))["total_tokens"] == 460
    machines = (await team.get("/machines"))["machines"]
    assert [(m["machine_id"], m["hostname"], m["batches"], m["responses"]) for m in machines] == [
        (MACHINE, "laptop", 2, 2)  # the replay is not a batch received
    ]
    assert machines[0]["total_tokens"] == 460


async def test_a_reused_idempotency_key_with_another_body_is_refused(team: RunningDaemon) -> None:
    assert (await post(team, body([snap("a", T0, 10, 1)]), key="k"))[0] == 200
    status, answer, _ = await post(team, body([snap("b", T0, 99, 1)]), key="k")
    assert status == 422
    assert "already used for a different body" in answer["error"]
    assert (await team.get("/stats"))["total_tokens"] == 11


@pytest.mark.parametrize("order", ["small first", "large first"])
async def test_the_larger_snapshot_of_a_key_is_kept_whatever_the_order(
    team: RunningDaemon, order: str
) -> None:
    small, large = snap("m1:r1", T0, 100, 5), snap("m1:r1", T0, 100, 900)
    first, second = (small, large) if order == "small first" else (large, small)
    await post(team, body([first], batch="x1"), key="x1")
    await post(team, body([second], batch="x2"), key="x2")
    assert (await team.get("/stats"))["total_tokens"] == 1000
    assert (await team.get("/daily?tz=UTC"))["totals"]["output_tokens"] == 900


async def test_a_sidechain_replay_sent_before_its_original_is_retracted(
    team: RunningDaemon,
) -> None:
    replay = snap("m1:req-side", T0, 50, 50, message_id="m1", sidechain=True)
    original = snap("m1:req-main", T0 + 1000, 50, 50, message_id="m1")
    await post(team, body([replay], batch="b1"), key="b1")
    assert (await team.get("/stats"))["total_tokens"] == 100
    await post(team, body([original], batch="b2"), key="b2")
    assert (await team.get("/stats"))["total_tokens"] == 100  # one response, not two
    assert (await team.get("/blocks"))["blocks"][0]["entries"] == 1


async def test_machines_are_counted_apart_and_together(team: RunningDaemon) -> None:
    other = {"machine_id": OTHER, "hostname": "desktop", "version": "0.1.0"}
    # the same key on two machines is two responses
    await post(team, body([snap("m1:r1", T0, 100, 0)]), key="a")
    await post(team, body([snap("m1:r1", T0 + 3_600_000, 7, 0)], agent=other), key="b")
    assert (await team.get("/stats"))["total_tokens"] == 107
    assert (await team.get("/stats?machine=all"))["total_tokens"] == 107
    assert (await team.get(f"/stats?machine={MACHINE}"))["total_tokens"] == 100
    assert (await team.get(f"/stats?machine={OTHER}"))["total_tokens"] == 7
    for path in ("/daily", "/blocks", "/sessions", "/projects"):
        mine = await team.get(f"{path}?machine={MACHINE}")
        assert json.dumps(mine).count('"total_tokens": 100') >= 1, path
    together = (await team.get("/blocks"))["blocks"]
    assert [(b["start"], b["entries"], b["total_tokens"]) for b in together] == [
        ("2025-11-24T16:00:00Z", 2, 107)
    ]
    unknown = await team.get("/daily?machine=nope", status=404)
    assert unknown["parameter"] == "machine"
    assert MACHINE in unknown["error"] and OTHER in unknown["error"]


async def test_bad_bodies_and_tokens_change_nothing(
    team: RunningDaemon, logs: list[dict[str, Any]]
) -> None:
    await post(team, body([snap("keep", T0, 5, 5)]), key="good")
    good = json.loads(body([snap("m9", T0, 1, 1)]))

    def variant(path: list[Any], value: Any) -> bytes:
        doc = json.loads(json.dumps(good))
        target = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return json.dumps(doc).encode()

    cases: list[tuple[bytes, dict[str, Any], int, str]] = [
        (b"{not json", {}, 400, "not JSON"),
        (b"\xff\xfe", {}, 400, "not JSON"),
        (variant(["snapshots", 0, "input_tokens"], -1), {}, 422, "$.snapshots[0].input_tokens"),
        (variant(["agent", "machine_id"], "../../etc"), {}, 422, "$.agent.machine_id"),
        (variant(["schema"], 2), {}, 422, "$.schema"),
        (variant(["snapshots", 0, "timestamp"], "yesterday"), {}, 422, "timestamp"),
        (variant(["snapshots", 0, "is_sidechain"], "no"), {}, 422, "is_sidechain"),
        (json.dumps({**good, "snapshots": [{"key": "x"}]}).encode(), {}, 422, "snapshots[0]"),
        (json.dumps(good).encode(), {"token": None}, 401, "token"),
        (json.dumps(good).encode(), {"token": "not-the-token-9f3e"}, 401, "token"),
        (b"[" + b" " * (11 * 1024 * 1024) + b"]", {}, 413, "Too Large"),
    ]
    for data, kwargs, expected, words in cases:
        status, answer, _ = await post(team, data, key=f"bad-{expected}-{len(data)}", **kwargs)
        assert (status, words in answer["error"]) == (expected, True), (answer, words)
    stats = await team.get("/stats")
    assert stats["total_tokens"] == 10
    machines = (await team.get("/machines"))["machines"]
    assert [(m["machine_id"], m["batches"], m["responses"]) for m in machines] == [(MACHINE, 1, 1)]
    # each refusal is one warning on the server too, never with the token
    refused = [e for e in logs if e["event"] == "team.refused"]
    assert [e["status"] for e in refused] == [expected for _d, _k, expected, _w in cases]
    assert all(e["log_level"] == "warning" and e["remote"] == "127.0.0.1" for e in refused)
    assert "not-the-token-9f3e" not in json.dumps(refused) and TOKEN not in json.dumps(refused)


async def test_the_setup_guides_webhook_path_takes_the_same_batches(team: RunningDaemon) -> None:
    status, answer, _ = await post(
        team, body([snap("m1:r1", T0, 3, 4)]), path="/app/claude-usage/agent-sync/"
    )
    assert (status, answer["snapshots"]) == (200, 1)
    assert (await team.get("/app/claude-usage/stats/"))["total_tokens"] == 7


async def test_a_team_server_keeps_what_it_received_across_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "claude"
    (root / "projects").mkdir(parents=True)
    db = tmp_path / "usage.sqlite3"
    async with daemon_on(root, db, accept_forwarded=True) as server:
        status, _, _ = await post(server, body([snap("m1:r1", T0, 30, 12)]), token=None)
        assert status == 200  # on loopback with no token set, none is needed
    assert sorted(p.name for p in (team_dir(db) / "machines").iterdir()) == [f"{MACHINE}.sqlite3"]
    async with daemon_on(root, db, accept_forwarded=True) as server:
        machines = (await server.get("/machines"))["machines"]
        assert [(m["machine_id"], m["total_tokens"]) for m in machines] == [(MACHINE, 42)]
        assert (await server.get(f"/stats?machine={MACHINE}"))["total_tokens"] == 42


async def test_beyond_loopback_a_team_server_needs_an_ingest_token(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="CLAUDE_USAGED_INGEST_TOKEN"):
        await start_daemon(tmp_path, tmp_path / "u.sqlite3", host="0.0.0.0", accept_forwarded=True)


async def test_a_plain_daemon_answers_for_its_own_machine_only(running: RunningDaemon) -> None:
    write_lines(
        running.projects / "p" / "s1.jsonl",
        [assistant("m1", "r1", "2025-11-24T16:00:00.000Z", input_tokens=8, output_tokens=2)],
    )
    await running.refresh()
    health = await running.get("/health")
    own = health["machine_id"]
    assert health["team"] == {"enabled": False, "machines": 0}
    assert await running.get(f"/daily?machine={own}") == await running.get("/daily")
    assert (await running.get("/stats?machine=all"))["total_tokens"] == 10
    missing = await running.get("/daily?machine=0000", status=404)
    assert missing["parameter"] == "machine" and "--accept-forwarded" in missing["error"]
    async with running.http.post(running.url + "/v1/ingest", data=b"{}") as resp:
        assert resp.status == 404  # not a team server: no ingest endpoint


def history(projects: Path) -> int:
    """Two projects, two days, three blocks, a streamed response, a copy in another file,
    a sidechain replay, 1-hour cache writes; returns the total tokens counted by hand."""
    api, web = projects / "-home-dev-api", projects / "-home-dev-web"
    write_lines(
        api / "s1.jsonl",
        [
            assistant("m1", "r1", "2025-11-24T09:05:00.000Z", input_tokens=10, output_tokens=1),
            # streamed: the later, larger line of m1:r1 wins (10 + 50)
            assistant("m1", "r1", "2025-11-24T09:05:01.000Z", input_tokens=10, output_tokens=50),
            assistant(
                "m2", "r2", "2025-11-24T10:00:00.000Z", input_tokens=5, output_tokens=5,
                cache_creation=1000, cache_read=2000,
                extra_usage={"cache_creation": {"ephemeral_1h_input_tokens": 1000}},
            ),
            assistant("m3", "r3", "2025-11-24T15:30:00.000Z", input_tokens=7, output_tokens=3),
        ],
    )  # fmt: skip
    write_lines(
        web / "s2.jsonl",
        [
            assistant("m1", "r1", "2025-11-24T09:05:01.000Z", input_tokens=10, output_tokens=50),
            # a sidechain replay of m3 (same message id): not counted
            assistant(
                "m3", "r3-side", "2025-11-24T15:31:00.000Z", input_tokens=7, output_tokens=3,
                sidechain=True, session="s2", cwd="/home/dev/web",
            ),
            assistant(
                "m4", "r4", "2025-11-25T01:00:00.000Z", input_tokens=100, output_tokens=20,
                session="s2", cwd="/home/dev/web", model="claude-opus-4-1-20250805",
            ),
        ],
    )  # fmt: skip
    return 60 + 3010 + 10 + 120


async def wait_delivered(sender: RunningDaemon) -> None:
    await sender.wait_for(
        lambda s: s["forwarding"]["pending"] == 0 and s["forwarding"]["state"] == "ok"
        and s["forwarding"]["last_success_at"] is not None,
        timeout=20,
    )  # fmt: skip


async def test_two_daemons_forwarding_and_receiving_agree(tmp_path: Path) -> None:
    team_root = tmp_path / "server-claude"
    (team_root / "projects").mkdir(parents=True)
    laptop = tmp_path / "laptop-claude"
    expected = history(laptop / "projects")
    async with daemon_on(
        team_root, tmp_path / "server" / "usage.sqlite3", accept_forwarded=True, ingest_token=TOKEN
    ) as server, daemon_on(
        laptop, tmp_path / "laptop" / "usage.sqlite3",
        forward_url=server.url + "/v1/ingest", forward_token=TOKEN,
    ) as sender:  # fmt: skip
        await wait_delivered(sender)
        machine = (await sender.get("/health"))["machine_id"]
        assert (await sender.get("/stats"))["total_tokens"] == expected
        await assert_same_answers(sender, server, machine)
        # a later, larger line of a response already forwarded, and a new response
        write_lines(
            laptop / "projects" / "-home-dev-api" / "s1.jsonl",
            [
                assistant("m3", "r3", "2025-11-24T15:30:00.000Z", input_tokens=7, output_tokens=93),
                assistant(
                "m5", "r5", "2025-11-25T02:00:00.000Z", input_tokens=1, output_tokens=1,
                text=SECRET,
            ),
            ],
        )  # fmt: skip
        await sender.refresh()
        await sender.wait_for(lambda s: s["total_tokens"] == expected + 90 + 2)
        await wait_delivered(sender)
        await assert_same_answers(sender, server, machine)
        machines = (await server.get("/machines"))["machines"]
        assert [(m["machine_id"], m["responses"], m["total_tokens"]) for m in machines] == [
            (machine, 5, expected + 92)
        ]
    # message content reaches neither database (nor their WAL files)
    stored = [p for p in tmp_path.rglob("*") if p.is_file() and ".sqlite3" in p.name]
    assert any("-team" in str(p) for p in stored)
    for path in stored:
        assert SECRET.encode() not in path.read_bytes(), path


async def assert_same_answers(sender: RunningDaemon, server: RunningDaemon, machine: str) -> None:
    for path in ("/daily?tz=UTC", "/daily?tz=Asia/Kolkata", "/blocks", "/sessions", "/projects"):
        mine = await sender.get(path)
        sep = "&" if "?" in path else "?"
        assert await server.get(path) == mine, path
        assert await server.get(f"{path}{sep}machine={machine}") == mine, path
    ours, theirs = await sender.get("/stats"), await server.get("/stats")
    for field in ("total_tokens", "total_cost_usd", "current_window", "today"):
        assert theirs[field] == ours[field], field


def test_team_databases_hold_no_message_content(tmp_path: Path) -> None:
    """The team store is fed only by payloads, which carry no content: check the columns."""
    conn = sqlite3.connect(":memory:")
    from claude_usaged.schema import MIGRATIONS

    for script in MIGRATIONS:
        conn.executescript(script)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(team_machines)")}
    assert columns == {
        "machine_id", "hostname", "version", "first_sync_ms", "last_sync_ms", "batches"
    }  # fmt: skip


async def test_a_401_from_the_team_server_names_the_token_settings(tmp_path: Path) -> None:
    team_root = tmp_path / "s"
    (team_root / "projects").mkdir(parents=True)
    laptop = tmp_path / "l"
    history(laptop / "projects")
    async with daemon_on(
        team_root, tmp_path / "server.sqlite3", accept_forwarded=True, ingest_token=TOKEN
    ) as server, daemon_on(
        laptop, tmp_path / "laptop.sqlite3",
        forward_url=server.url + "/v1/ingest", forward_token="not-the-token",
    ) as sender:  # fmt: skip
        state = await sender.wait_for(lambda s: s["forwarding"]["state"] == "failing")
        # the flag the token came from (daemon_on passes settings as flags)
        assert state["forwarding"]["last_error"] == "401 Unauthorized — check --forward-token"
        assert (await server.get("/stats"))["total_tokens"] == 0
        async with aiohttp.ClientSession() as http, http.get(server.url + "/machines") as resp:
            assert (await resp.json())["machines"] == []


def test_two_daemon_processes_forwarding_and_receiving_agree(tmp_path: Path) -> None:
    """`claude-usaged run` twice: a sender with --forward-url, a --accept-forwarded server."""
    import signal
    import subprocess

    from test_process import Proc, launch

    def spawn(name: str, *args: str, **env: str) -> Proc:
        root, db = tmp_path / name / "claude", tmp_path / name / "usage.sqlite3"
        (root / "projects").mkdir(parents=True, exist_ok=True)
        return launch(db, root, tmp_path / "home", procs, *args, **env)

    procs: list[subprocess.Popen[str]] = []
    try:
        expected = history(tmp_path / "laptop" / "claude" / "projects")
        server = spawn("server", "--accept-forwarded", CLAUDE_USAGED_INGEST_TOKEN=TOKEN)
        sender = spawn(
            "laptop",
            "--forward-url",
            server.url + "/v1/ingest",
            CLAUDE_USAGED_FORWARD_TOKEN=TOKEN,
        )
        sender.wait_stats(
            lambda s: s["forwarding"]["pending"] == 0 and s["total_tokens"] == expected
            and s["forwarding"]["last_success_at"] is not None
        )  # fmt: skip
        machine = sender.get("/health")["machine_id"]
        for path in ("/daily?tz=UTC", "/blocks"):
            assert server.get(path) == sender.get(path), path
            sep = "&" if "?" in path else "?"
            assert server.get(f"{path}{sep}machine={machine}") == sender.get(path), path
        assert [m["total_tokens"] for m in server.get("/machines")["machines"]] == [expected]
        for proc in (sender, server):
            status, stderr = proc.stop(signal.SIGTERM)
            assert status == 0, stderr
            assert TOKEN not in stderr
    finally:
        for popen in procs:
            if popen.poll() is None:
                popen.kill()
                popen.communicate()


async def test_client_commands_take_machine_and_list_machines(
    team: RunningDaemon, running: RunningDaemon
) -> None:
    from test_client import cli, raw

    other = {"machine_id": OTHER, "hostname": "desktop-with-a-long-name", "version": "0.1.0"}
    await post(team, body([snap("m1:r1", T0, 1_234_000, 5)]), key="a")
    await post(team, body([snap("m1:r1", T0, 7, 0)], agent=other), key="b")
    proc = await cli("daily", "--json", "--machine", OTHER, "--db", str(team.db))
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == await raw(team, f"/daily?machine={OTHER}") + "\n"
    assert json.loads(proc.stdout)["totals"]["total_tokens"] == 7
    proc = await cli("machines", "--db", str(team.db), COLUMNS="160")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(MACHINE in line and "laptop" in line and "1,234,005" in line for line in lines)
    assert any(OTHER in line and "desktop-with-a-long-name" in line for line in lines)
    proc = await cli("machines", "--since", "2026-11-01", "--db", str(team.db))
    assert proc.returncode == 2 and "unrecognized arguments: --since" in proc.stderr
    proc = await cli("machines", "--db", str(running.db))
    assert proc.returncode == 2
    assert "not a team server" in proc.stderr and "--accept-forwarded" in proc.stderr


async def test_the_setup_guides_cron_variables_sync_into_a_team_server(
    team: RunningDaemon, tmp_path: Path
) -> None:
    """`sync --once` with CLAUDE_USAGE_API_URL/_TOKEN posts to the agent-sync path of a
    team server, which counts it; the guide's success line is printed."""
    from test_sync_once import sync

    laptop = tmp_path / "cron-laptop"
    expected = history(laptop / "projects")
    done = await sync(
        laptop,
        tmp_path / "cron" / "usage.sqlite3",
        CLAUDE_USAGE_API_URL=team.url,
        CLAUDE_USAGE_API_TOKEN=TOKEN,
    )
    assert (done.code, done.out, done.err) == (
        0,
        "✓ Sync successful: Synced 2 projects, 2 sessions, 4 snapshots\n",  # replay not sent
        "",
    )
    assert (await team.get("/stats"))["total_tokens"] == expected


@pytest.mark.parametrize("name", ["ingest_token", "forward_token"])
@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_token_is_a_bad_setting(tmp_path: Path, name: str, blank: str) -> None:
    """An empty token would let anybody in (or authenticate nobody): refused, from any source."""
    from claude_usaged.settings import SettingsError, load_settings

    config = tmp_path / "c.toml"
    config.write_text(f'{name} = "{blank}"\n')
    for flags in ({name: blank}, {"config": str(config)}):
        with pytest.raises(SettingsError, match=f"bad setting {name} .*must not be empty"):
            load_settings({"accept_forwarded": True, "host": "0.0.0.0", **flags}, env={})


def test_a_team_server_lifts_its_open_files_limit() -> None:
    """Two connections per machine: the soft limit goes up to the hard one (at most 65,536)."""
    import resource

    from claude_usaged.limits import raise_open_files_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        expected = 65_536 if hard == resource.RLIM_INFINITY else min(65_536, hard)
        assert raise_open_files_limit() == expected
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (expected, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_line_with_an_absurd_field_is_skipped_and_holds_back_no_forwarding(
    tmp_path: Path,
) -> None:
    """A 300-character model name is corrupt: the sender skips that line (so it never
    stores what a team server would refuse) and everything else is delivered."""
    team_root = tmp_path / "s"
    (team_root / "projects").mkdir(parents=True)
    laptop = tmp_path / "l"
    write_lines(
        laptop / "projects" / "p" / "s.jsonl",
        [
            assistant("m1", "r1", "2025-11-24T10:00:00.000Z", input_tokens=100),
            assistant(
                "m2", "r2", "2025-11-24T10:01:00.000Z", input_tokens=200,
                model="claude-sonnet-4-" + "x" * 300,
            ),
            assistant("m3", "r3", "2025-11-24T10:02:00.000Z", input_tokens=400, cwd="/" * 4097),
            assistant("m4", "r4", "2025-11-24T10:03:00.000Z", input_tokens=800),
        ],
    )  # fmt: skip
    async with daemon_on(
        team_root, tmp_path / "server.sqlite3", accept_forwarded=True, ingest_token=TOKEN
    ) as server, daemon_on(
        laptop, tmp_path / "laptop.sqlite3",
        forward_url=server.url + "/v1/ingest", forward_token=TOKEN,
    ) as sender:  # fmt: skip
        stats = await sender.get("/stats")
        assert (stats["total_tokens"], stats["ingest"]["skipped_lines"]) == (900, 2)
        await wait_delivered(sender)
        assert (await server.get("/stats"))["total_tokens"] == 900
