"""The call store and the recorder that writes live calls into it, on every backend (a real SQLite file, a real
PostgreSQL server): each test runs once per backend and must see the same behaviour."""

from __future__ import annotations

import asyncio
import re
import select
import subprocess
import sys
import textwrap

import pytest

from voicebot.calls.report import CallReport, Turn
from voicebot.events import IntakeForm, Transfer
from voicebot.metrics import CallMetrics
from tests.store_backends import execute_sql, make_store
from voicebot.storage import StoreError
from voicebot.storage.migrations import latest_version
from voicebot.storage.recorder import StoreRecorder

PID = "131052-308T"


@pytest.fixture
async def store(store_url: str):
    async with make_store(store_url) as s:
        yield s


def report(call_id: str, started_at: str = "2026-11-28T10:00:00+00:00", **kw) -> CallReport:
    return CallReport(call=f"sip:{call_id}", call_id=call_id, caller_id="+358401234567", engine="vosk",
                      started_at=started_at, **kw)


def full_report(call_id: str) -> CallReport:
    r = report(call_id)
    r.turns = [
        Turn("bot", "Welcome to the benefits line.", 0.0, 2.5, interrupted=True),
        Turn("caller", "housing allowance please", 2.1, 3.4, intent="apply_housing_allowance", confidence=0.87),
        Turn("bot", "Please say your personal identity code.", 4.0, 6.0),
        Turn("caller", "[DTMF 12]", 6.5, 7.0, confidence=1.0),
        Turn("caller", "bye", 8.0, 8.5, intent="goodbye", confidence=0.9, counted=False),
    ]
    r.latency_ms = [612.5, 480.25]
    r.outcome = "transferred"
    r.transfer = Transfer("complex_case", "benefits")
    r.ended_at = "2026-11-28T10:00:09+00:00"
    r.duration_s = 9.125
    return r


async def test_a_full_report_reads_back_exactly_as_replay_prints_it(store):
    r = full_report("c1")
    await store.start_call(r)
    r.intake = IntakeForm("housing_allowance", "incomplete", {"personal_id": PID, "household_size": 3})
    await store.save_intake("c1", r.intake)
    await store.end_call(r)

    record = await store.get_call("c1")
    assert record.status == "ended"
    assert record.report.to_json() == r.to_json()
    assert record.report.intents == ["apply_housing_allowance"]
    assert record.to_json()["status"] == "ended"


async def test_end_call_alone_stores_a_call_it_never_saw_start(store):
    r = full_report("late")
    await store.end_call(r)
    assert (await store.get_call("late")).report.to_json() == r.to_json()


async def test_unknown_call_is_none(store):
    assert await store.get_call("nope") is None


async def test_turns_are_stored_as_they_happen_not_only_at_the_end(store, store_url):
    recorder = StoreRecorder(store)
    r = report("live")
    await recorder.call_started(r)
    welcome = Turn("bot", "Welcome.", 0.0, 0.0)
    r.turns.append(welcome)
    await recorder.turn_added(r, welcome)
    caller = Turn("caller", "rent help", 1.0, 2.0, confidence=0.8)
    r.turns.append(caller)
    await recorder.turn_added(r, caller)
    # the session changes turns after announcing them, and adds key presses unannounced
    welcome.end_s, welcome.interrupted = 1.2, True
    caller.intent = "apply_housing_allowance"
    r.turns.append(Turn("caller", "[DTMF 5]", 3.0, 3.0, confidence=1.0))
    r.latency_ms.append(700.0)
    r.intake = IntakeForm("housing_allowance", "incomplete", {"postal_code": "00180"})
    await recorder.intake_saved(r, r.intake)

    async with make_store(store_url, recover=False) as reader:
        seen = await reader.get_call("live")
    assert seen.status == "active"
    assert seen.to_json()["outcome"] is None
    assert [t.to_json() for t in seen.report.turns] == [t.to_json() for t in r.turns]
    assert seen.report.latency_ms == [700.0]
    assert seen.report.intake.fields == {"postal_code": "00180"}


async def test_intake_fields_are_updated_as_each_is_collected(store):
    await store.start_call(report("c1"))
    await store.save_intake("c1", IntakeForm("housing_allowance", "incomplete", {"personal_id": PID}))
    first = (await store.list_applications())[0]
    await store.save_intake("c1", IntakeForm("housing_allowance", "incomplete", {"personal_id": PID,
                                                                                  "postal_code": "00180"}))
    apps = await store.list_applications()
    assert len(apps) == 1
    assert apps[0].intake.fields == {"personal_id": PID, "postal_code": "00180"}
    assert apps[0].intake.status == "incomplete" and apps[0].intake.reference is None
    assert apps[0].created_at == first.created_at and apps[0].updated_at >= first.updated_at


async def test_a_submitted_form_keeps_its_status_reference_and_fields(store):
    await store.start_call(report("c1"))
    form = IntakeForm("housing_allowance", "submitted", {"personal_id": PID})
    reference = await store.submit_intake("c1", form)
    await store.save_intake("c1", IntakeForm("housing_allowance", "incomplete", {}))
    assert await store.submit_intake("c1", form) == reference
    (app,) = await store.list_applications()
    assert (app.intake.status, app.intake.reference, app.intake.fields) == ("submitted", reference, {"personal_id": PID})
    assert app.submitted_at is not None


async def test_references_are_unique_and_increasing_across_restarts(store_url):
    refs = []
    for round_ in range(2):
        async with make_store(store_url) as store:
            for i in range(3):
                call_id = f"r{round_}{i}"
                await store.start_call(report(call_id))
                refs.append(await store.submit_intake(call_id, IntakeForm("housing_allowance", "submitted", {})))
    assert refs[0] == "HA100001"
    assert all(re.fullmatch(r"HA\d{6}", ref) for ref in refs)
    numbers = [int(ref[2:]) for ref in refs]
    assert numbers == sorted(set(numbers)) and len(numbers) == 6


async def test_calls_are_listed_newest_first_up_to_the_limit(store):
    for i, started in enumerate(["10:00:00", "10:05:00", "10:05:00", "09:00:00"]):
        await store.start_call(report(f"c{i}", f"2026-11-28T{started}+00:00"))
    assert [c.call_id for c in await store.list_calls()] == ["c2", "c1", "c0", "c3"]
    assert [c.call_id for c in await store.list_calls(limit=2)] == ["c2", "c1"]


async def test_call_summaries_carry_outcome_turn_count_and_reference(store):
    r = full_report("c1")
    await store.start_call(r)
    r.intake = IntakeForm("housing_allowance", "submitted", {}, await store.submit_intake(
        "c1", IntakeForm("housing_allowance", "submitted", {})))
    await store.end_call(r)
    (summary,) = await store.list_calls()
    assert summary.to_json() == {
        "call_id": "c1", "call": "sip:c1", "caller_id": "+358401234567", "status": "ended",
        "outcome": "transferred", "transfer": {"reason": "complex_case", "queue": "benefits"},
        "started_at": "2026-11-28T10:00:00+00:00", "ended_at": "2026-11-28T10:00:09+00:00", "duration_s": 9.125,
        "turn_count": 5, "intake_status": "submitted", "reference": "HA100001",
    }


async def test_applications_are_newest_first_and_filter_by_status(store):
    for i in range(3):
        await store.start_call(report(f"c{i}"))
        await store.save_intake(f"c{i}", IntakeForm("housing_allowance", "incomplete", {"n": i}))
    await store.submit_intake("c1", IntakeForm("housing_allowance", "submitted", {"n": 1}))
    assert [a.call_id for a in await store.list_applications()] == ["c2", "c1", "c0"]
    assert [a.call_id for a in await store.list_applications("submitted")] == ["c1"]
    assert [a.call_id for a in await store.list_applications("incomplete", limit=1)] == ["c2"]


@pytest.mark.parametrize("limit", [0, -1, 501])
async def test_a_limit_out_of_range_is_refused(store, limit):
    with pytest.raises(ValueError, match="limit must be from 1 to 500"):
        await store.list_calls(limit)


async def test_calls_left_open_are_marked_interrupted_when_the_store_reopens(store_url):
    async with make_store(store_url) as store:
        await store.end_call(full_report("done"))
        open_call = report("open")
        await store.start_call(open_call)
        await store.save_progress("open", {0: Turn("bot", "Welcome.", 0.0, 2.0),
                                           1: Turn("caller", "rent", 2.5, 3.25)}, [510.0])
        await store.save_intake("open", IntakeForm("housing_allowance", "incomplete", {"personal_id": PID}))
    async with make_store(store_url, recover=False) as store:
        assert await store.recover_interrupted() == 1
        assert await store.recover_interrupted() == 0
        record = await store.get_call("open")
        done = await store.get_call("done")
    assert record.status == "interrupted" and record.report.outcome == "abandoned"
    assert record.report.ended_at and record.report.duration_s == 3.25
    assert record.report.intake.status == "incomplete"
    assert record.report.intake.fields == {"personal_id": PID}
    assert done.status == "ended" and done.report.outcome == "transferred"


CRASHING_CALL = textwrap.dedent("""
    import asyncio, sys
    from voicebot.calls.report import CallReport, Turn
    from voicebot.events import IntakeForm
    from tests.store_backends import make_store
    from voicebot.storage.recorder import StoreRecorder

    async def main(url):
        store = make_store(url)
        await store.open()
        recorder = StoreRecorder(store)
        r = CallReport(call="sip", call_id="killed", caller_id="+358501112223", started_at="2026-11-28T10:00:00+00:00")
        await recorder.call_started(r)
        for turn in [Turn("bot", "Welcome.", 0.0, 1.5), Turn("caller", "housing allowance", 2.0, 3.0),
                     Turn("bot", "Your personal identity code?", 3.6, 5.0), Turn("caller", "one three one", 6.0, 9.5)]:
            r.turns.append(turn)
            await recorder.turn_added(r, turn)
            if turn.text == "one three one":
                await recorder.intake_saved(r, IntakeForm("housing_allowance", "incomplete", {"personal_id": "131052-308T"}))
        await recorder.intake_saved(r, IntakeForm("housing_allowance", "incomplete",
                                                  {"personal_id": "131052-308T", "postal_code": "00180"}))
        print("READY", flush=True)
        await asyncio.sleep(600)

    asyncio.run(main(sys.argv[1]))
""")


def test_a_call_killed_mid_way_keeps_its_transcript_and_fields(store_url):
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_CALL, store_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert line.strip() == "READY", proc.stderr.read() if proc.poll() is not None else "child did not get ready"
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -9

    async def reopen():
        async with make_store(store_url) as store:
            return await store.get_call("killed"), await store.list_applications("incomplete")

    record, apps = asyncio.run(reopen())
    assert record.status == "interrupted" and record.report.outcome == "abandoned"
    assert [t.text for t in record.report.turns] == ["Welcome.", "housing allowance", "Your personal identity code?",
                                                     "one three one"]
    assert record.report.caller_id == "+358501112223"
    assert record.report.duration_s == 9.5
    assert record.report.intake == IntakeForm("housing_allowance", "incomplete",
                                              {"personal_id": PID, "postal_code": "00180"})
    assert [a.call_id for a in apps] == ["killed"]


async def test_migrations_run_once_and_reopening_changes_nothing(store_url):
    async with make_store(store_url) as store:
        await store.end_call(full_report("c1"))
        first_version = store.schema_version
    async with make_store(store_url) as store:
        assert store.schema_version == first_version == latest_version(store.backend)
        assert (await store.get_call("c1")).report.to_json() == full_report("c1").to_json()


async def test_a_store_from_a_newer_voicebot_is_refused(store_url):
    async with make_store(store_url):
        pass
    await execute_sql(store_url, "UPDATE alembic_version SET version_num = '0999'")
    with pytest.raises(StoreError, match="schema version 999, newer than"):
        await make_store(store_url).open()


async def test_a_closed_store_says_so(store_url):
    store = make_store(store_url)
    await store.open()
    await store.ping()
    await store.close()
    with pytest.raises(StoreError, match="is closed"):
        await store.ping()


async def test_the_recorder_feeds_call_metrics(store):
    metrics = CallMetrics()
    recorder = StoreRecorder(store, metrics)
    value = metrics.registry.get_sample_value
    r = report("m1")
    await recorder.call_started(r)
    assert value("voicebot_active_calls") == 1
    r.turns.append(Turn("bot", "Hello", 0.0, 1.0))
    r.latency_ms.append(450.0)
    await recorder.turn_added(r, r.turns[-1])
    assert value("voicebot_turn_latency_seconds_count") == 1
    r.latency_ms.append(1200.0)
    r.outcome, r.transfer = "transferred", Transfer("not_understood", "benefits")
    await recorder.call_ended(r)
    assert value("voicebot_active_calls") == 0
    assert value("voicebot_turn_latency_seconds_count") == 2
    assert value("voicebot_turn_latency_seconds_sum") == pytest.approx(1.65)
    assert value("voicebot_calls_total", {"outcome": "transferred"}) == 1
    assert value("voicebot_transfers_total", {"reason": "not_understood"}) == 1
    assert (await store.get_call("m1")).status == "ended"


async def test_recorder_logs_never_show_a_whole_personal_id(store, caplog):
    recorder = StoreRecorder(store)
    r = report("p1")
    await recorder.call_started(r)
    with caplog.at_level("DEBUG", logger="voicebot"):
        form = IntakeForm("housing_allowance", "incomplete", {"personal_id": PID})
        await recorder.intake_saved(r, form)
        await recorder.submit_intake(r, IntakeForm("housing_allowance", "submitted", {"personal_id": PID}))
        await recorder.call_ended(r)
    assert "131052-***T" in caplog.text
    assert PID not in caplog.text


def test_the_store_url_in_the_settings_chooses_the_backend(tmp_path):
    from voicebot.config import ConfigError, load_settings
    from voicebot.storage import SqliteCallStore, open_store
    from voicebot.storage.postgres import PostgresCallStore

    config = tmp_path / "voicebot.toml"
    config.write_text('[store]\nurl = "postgresql://vb:secret@db.example.org/voicebot"\n')
    default = open_store(load_settings(env={"VOICEBOT_DATA_DIR": str(tmp_path / "data")}))
    assert isinstance(default, SqliteCallStore) and default.path == tmp_path / "data" / "voicebot.sqlite3"
    other_file = open_store(load_settings(env={"VOICEBOT_DATABASE_URL": f"sqlite:///{tmp_path}/other.db"}))
    assert isinstance(other_file, SqliteCallStore) and other_file.path == tmp_path / "other.db"
    shared = open_store(load_settings(config, env={}))
    assert isinstance(shared, PostgresCallStore)
    assert "secret" not in shared.where and "db.example.org/voicebot" in shared.where
    from_env = open_store(load_settings(config, env={"VOICEBOT_DATABASE_URL": "postgres://vb@other/db"}))
    assert isinstance(from_env, PostgresCallStore) and "other/db" in from_env.where
    with pytest.raises(ConfigError, match="store url must start with"):
        load_settings(env={"VOICEBOT_DATABASE_URL": "mysql://vb@db/voicebot"})
