"""Each fault as an object (inject, heal, a name), and the scenario that runs one under load.

A scenario: load starts → warm-up → inject → hold → heal → load goes on a little → load
stops (indeterminate requests keep being retried until they get a definitive answer) →
drain (every acknowledged id applied, polled with a deadline) → the ledger check.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.faults.check import Result, check, drain, table
from tests.faults.harness import SOURCE, Harness, pace
from tests.faults.ledger import SETTLE_S, Ledger, LoadDriver
from touchpulse_shared.kafka.topics import topic_specs

# Two int4 keys: a separate space from scoring's single-bigint advisory locks.
COMMIT_LOCK = (0x7F17, 1)
REPORTED_LOST_METRIC = "touchpulse_scoring_data_lost_records_total"


@dataclass
class Fault:
    name: str
    hold_s: float = 5.0
    notes: list[str] = field(default_factory=list)

    def inject(self, h: Harness) -> None:
        raise NotImplementedError

    def heal(self, h: Harness) -> None:
        raise NotImplementedError

    def allowed_missing(self, h: Harness) -> int:
        """Acknowledged events the system itself reported as lost (retention only)."""
        return 0


# --- Kafka ---------------------------------------------------------------------------------


@dataclass
class BrokerKill(Fault):
    """SIGKILL of the broker (its data kept), restarted on the same ports."""

    name: str = "broker-kill-restart"
    hold_s: float = 3.0

    def inject(self, h: Harness) -> None:
        assert h.kafka is not None
        h.kafka.kill()

    def heal(self, h: Harness) -> None:
        assert h.kafka is not None
        h.kafka.restart()


@dataclass
class BrokerFreeze(Fault):
    """SIGSTOP of the broker, longer than ingest's produce timeout, then SIGCONT."""

    name: str = "broker-freeze"
    hold_s: float = 8.0

    def inject(self, h: Harness) -> None:
        assert h.kafka is not None
        h.kafka.freeze()

    def heal(self, h: Harness) -> None:
        assert h.kafka is not None
        h.kafka.thaw()


@dataclass
class ProxyFault(Fault):
    """A link to Kafka or PostgreSQL cut, blackholed or slowed, through the fault proxy."""

    target: str = "kafka"
    mode: str = "cut"
    delay_ms: float = 0.0

    def inject(self, h: Harness) -> None:
        proxy = h.kafka_proxy if self.target == "kafka" else h.pg_proxy
        h.loop.loop.call_soon_threadsafe(proxy.set_mode, self.mode, self.delay_ms)

    def heal(self, h: Harness) -> None:
        proxy = h.kafka_proxy if self.target == "kafka" else h.pg_proxy
        h.loop.loop.call_soon_threadsafe(proxy.set_mode, "pass", 0.0)


# --- scoring -------------------------------------------------------------------------------


@dataclass
class ScoringKill(Fault):
    """SIGKILL of a scoring member at a random point under load; a new one replaces it."""

    name: str = "scoring-sigkill"
    hold_s: float = 1.0
    seed: int = 1

    def inject(self, h: Harness) -> None:
        rng = random.Random(self.seed)
        pace(rng.uniform(0.0, 2.0))  # a random point in the stream
        rng.choice(h.live_members()).kill()

    def heal(self, h: Harness) -> None:
        h.ensure_members()


@dataclass
class ScoringKillAtCommit(Fault):
    """SIGKILL of scoring while its batch transaction is inside COMMIT.

    A deferred constraint trigger on ``consumer_offset`` (created by the harness in the test
    database only, dropped at heal) takes a shared advisory lock at commit time; holding the
    exclusive lock stalls every batch commit there. Once a scoring backend waits on it, all
    members are SIGKILLed. Then, by ``point``:

    - ``abort``: the stalled backends are terminated: the commit never happens;
    - ``complete``: the lock is released: the commit completes after its client died (the
      ambiguous commit a retry must find applied);
    - ``after``: the lock is released first and the member killed as soon as its commit is
      visible, before its Kafka offset commit.
    """

    name: str = "scoring-kill-at-commit"
    point: str = "abort"
    hold_s: float = 1.0

    def inject(self, h: Harness) -> None:
        h.sql(
            f"""
            CREATE OR REPLACE FUNCTION faults_commit_gate() RETURNS trigger AS $$
            BEGIN PERFORM pg_advisory_xact_lock_shared({COMMIT_LOCK[0]}, {COMMIT_LOCK[1]});
            RETURN NULL; END $$ LANGUAGE plpgsql;
            DROP TRIGGER IF EXISTS faults_commit_gate ON consumer_offset;
            CREATE CONSTRAINT TRIGGER faults_commit_gate AFTER INSERT OR UPDATE
            ON consumer_offset DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION faults_commit_gate();
            """
        )
        with h.db() as gate:
            h.loop.call(gate.execute("SELECT pg_advisory_lock($1, $2)", *COMMIT_LOCK))
            waiting = _wait_for(lambda: _gate_waiters(h), within_s=30.0)
            if not waiting:
                self.notes.append("FAIL: no scoring commit reached the gate")
                h.loop.call(gate.execute("SELECT pg_advisory_unlock_all()"))
                return
            if self.point == "after":
                h.loop.call(gate.execute("SELECT pg_advisory_unlock_all()"))
                # As soon as the stalled commit is through, before the Kafka offset commit.
                _wait_for(lambda: not _gate_waiters(h), within_s=10.0, interval=0.002)
                for member in h.live_members():
                    member.kill()
                return
            for member in h.live_members():
                member.kill()
            if self.point == "abort":
                h.sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY($1)",
                    waiting,
                )
                self.notes.append(f"{len(waiting)} commit(s) stalled, killed, aborted")
            else:
                self.notes.append(f"{len(waiting)} commit(s) stalled, killed, then completed")
            h.loop.call(gate.execute("SELECT pg_advisory_unlock_all()"))

    def heal(self, h: Harness) -> None:
        h.sql(
            "DROP TRIGGER IF EXISTS faults_commit_gate ON consumer_offset;"
            " DROP FUNCTION IF EXISTS faults_commit_gate();"
        )
        h.ensure_members()


def _gate_waiters(h: Harness) -> list[int]:
    rows = h.sql(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = $1 AND objid = $2 AND objsubid = 2",
        COMMIT_LOCK[0],
        COMMIT_LOCK[1],
    )
    return [r["pid"] for r in rows]


T = TypeVar("T")


def _wait_for(ready: Callable[[], T], *, within_s: float, interval: float = 0.05) -> T | None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(interval)
    return None


@dataclass
class MembersChurn(Fault):
    """Members joining and leaving: one joins, one leaves gracefully, another joins, one
    dies without leaving."""

    name: str = "scoring-members-churn"
    hold_s: float = 1.0

    def inject(self, h: Harness) -> None:
        h.add_member(wait=False)
        pace(2.0)
        first = h.live_members()[0]
        code = first.terminate()
        if code != 0:
            self.notes.append(f"FAIL: a leaving member exited with {code}")
        h.add_member(wait=False)
        pace(2.0)
        h.live_members()[0].kill()

    def heal(self, h: Harness) -> None:
        h.ensure_members()
        for member in h.live_members():
            member.wait_ready()


@dataclass
class Sigterm(Fault):
    """A graceful SIGTERM of one service under load; it must exit 0, and is restarted."""

    service: str = "scoring"
    hold_s: float = 1.0

    def inject(self, h: Harness) -> None:
        target = {"ingest": h.ingest, "api": h.api}.get(self.service) or h.live_members()[0]
        assert target is not None
        code = target.terminate()
        # uvicorn (0.29+) re-raises the signal after its graceful shutdown, so a web
        # service that shut down cleanly dies "by SIGTERM"; its log says it finished.
        finished = "Finished server process" in target.log_path.read_text(errors="replace")
        graceful = code == 0 or (code == -signal.SIGTERM and finished)
        if not graceful:
            self.notes.append(f"FAIL: {target.name} exited {code} on SIGTERM")

    def heal(self, h: Harness) -> None:
        if self.service == "ingest":
            assert h.ingest is not None
            h.ingest.start()
        elif self.service == "api":
            assert h.api is not None
            h.api.start()
        else:
            h.ensure_members()


@dataclass
class IngestKill(Fault):
    """SIGKILL of ingest with requests in flight; clients retry until it is back."""

    name: str = "ingest-sigkill"
    hold_s: float = 1.0

    def inject(self, h: Harness) -> None:
        assert h.ingest is not None
        h.ingest.kill()

    def heal(self, h: Harness) -> None:
        assert h.ingest is not None
        h.ingest.start()


@dataclass
class ConsumerPastRetention(Fault):
    """Scoring stopped for longer than the topic keeps data: records are deleted unread.

    Retention of the events topic is cut to 1 s with 1 s segments while every member is
    down (the broker checks retention every second), so records roll out while load goes
    on; then the topic's configs are restored and scoring restarted. Scoring must report
    the gap (``scoring.data_lost`` in its log and the lost-records metric); acknowledged
    events missing up to that reported count are "reported lost", never silent.
    """

    name: str = "consumer-past-retention"
    hold_s: float = 6.0
    reported: int = 0

    def inject(self, h: Harness) -> None:
        for member in h.live_members():
            member.terminate()
        self._configs(h, {"retention.ms": "1000", "segment.ms": "1000"})

    def heal(self, h: Harness) -> None:
        self._configs(h, {})
        h.ensure_members()

        def reported() -> float:
            return sum(m.metric(REPORTED_LOST_METRIC) for m in h.live_members())

        self.reported = int(_wait_for(reported, within_s=60.0) or 0)
        logged = any(
            "scoring.data_lost" in m.log_path.read_text(errors="replace") for m in h.scoring
        )
        if not self.reported or not logged:
            self.notes.append(
                f"FAIL: deleted records not reported (metric {self.reported}, logged {logged})"
            )
        else:
            self.notes.append(f"scoring reported {self.reported} records deleted unread")

    def allowed_missing(self, h: Harness) -> int:
        return self.reported

    def _configs(self, h: Harness, extra: dict[str, str]) -> None:
        spec = next(s for s in topic_specs(h.settings) if s.name == h.settings.events_topic)

        async def alter() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=h.direct_kafka)
            await admin.start()
            try:
                # AlterConfigs replaces every override: the topic's own configs go along.
                resource = ConfigResource(
                    ConfigResourceType.TOPIC, spec.name, configs={**spec.configs, **extra}
                )
                await admin.alter_configs([resource])
            finally:
                await admin.close()

        h.loop.call(alter())


# --- PostgreSQL ----------------------------------------------------------------------------


@dataclass
class PostgresRestart(Fault):
    """A fast shutdown of PostgreSQL and a start on the same port and data."""

    name: str = "postgres-restart"
    hold_s: float = 0.5

    def inject(self, h: Harness) -> None:
        assert h.postgres is not None
        h.postgres.restart()

    def heal(self, h: Harness) -> None:
        pass


@dataclass
class PostgresLock(Fault):
    """PostgreSQL stalled: an ACCESS EXCLUSIVE lock held on processed_event (every batch
    dedupes there) for the hold, then released."""

    name: str = "postgres-held-lock"
    hold_s: float = 8.0
    _conn: asyncpg.Connection | None = None
    _tx: object = None

    def inject(self, h: Harness) -> None:
        async def lock() -> tuple[asyncpg.Connection, object]:
            conn = await asyncpg.connect(h.direct_db, timeout=10)
            tx = conn.transaction()
            await tx.start()
            await conn.execute("LOCK TABLE processed_event IN ACCESS EXCLUSIVE MODE")
            return conn, tx

        self._conn, self._tx = h.loop.call(lock())

    def heal(self, h: Harness) -> None:
        async def release() -> None:
            assert self._conn is not None
            await self._tx.rollback()  # type: ignore[attr-defined]
            await self._conn.close()

        h.loop.call(release())


# --- PostgreSQL terminating sessions -------------------------------------------------------

#: Every role that holds PostgreSQL sessions (``application_name``), and the tables whose
#: writes in a transaction of that role the COMMIT gate stalls.
SESSION_ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "consumer": ("touchpulse-scoring/consumer", ("consumer_offset",)),
    "sweep": ("touchpulse-scoring/sweep", ("deadline", "intervention", "kafka_outbox")),
    "outbox": ("touchpulse-scoring/outbox", ("kafka_outbox",)),
    "gauges": ("touchpulse-scoring/gauges", ()),
    "api": ("touchpulse-api/requests", ("customer_profile", "kafka_outbox")),
    "webhooks": ("touchpulse-api/webhooks", ("webhook_outbox", "webhook_delivery")),
}
SESSION_STATES = ("active", "idle-in-tx", "idle", "commit")
_PG_STATE = {"active": "active", "idle-in-tx": "idle in transaction", "idle": "idle"}
# Outbox rows written before the heal must be published within this (the publisher alive).
OUTBOX_DRAIN_S = 60.0


@dataclass
class SessionTerminate(Fault):
    """``pg_terminate_backend`` on one role's sessions in one state, again and again while
    the fault holds: ``active`` (a statement running), ``idle-in-tx``, ``idle`` (in its
    pool), or ``commit`` (stalled inside COMMIT by a deferred constraint trigger that takes
    a shared advisory lock, for that role's sessions only, then terminated: the ambiguous
    commit the retry must resolve). The api gets reads and profile writes meanwhile. After
    the heal every process must be alive and healthy, and the outbox must drain (the
    publisher must not have stopped)."""

    role: str = "consumer"
    state: str = "active"
    hold_s: float = 6.0
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"pg-terminate-{self.role}-{self.state}"
        self._killed = 0
        self._api_load: asyncio.Event | None = None
        self._api_task: object = None
        self._api_errors: list[int] = []

    def inject(self, h: Harness) -> None:
        app, tables = SESSION_ROLES[self.role]
        self._killed = 0
        if self.role == "api":
            self._api_load = asyncio.Event()
            self._api_task = h.loop.submit(_api_traffic(h, self._api_load, self._api_errors))
        deadline = time.monotonic() + self.hold_s
        if self.state == "commit":
            if not tables:
                self.notes.append(f"{app} only reads (autocommit): no COMMIT to stall")
            else:
                self._commit_rounds(h, app, tables, deadline)
        else:
            with h.db() as killer:
                # One held session polling every few ms: short-lived states (a sweep's
                # statement, its idle moment inside a transaction) are caught too.
                self._killed += h.loop.call(
                    _terminate_while(
                        killer,
                        app,
                        _PG_STATE[self.state],
                        deadline,
                        0.002 if self.state != "idle" else 0.5,
                    ),
                    timeout=self.hold_s + 30,
                )
        self.notes.append(f"{self._killed} {app} session(s) terminated {self.state}")

    def _commit_rounds(
        self, h: Harness, app: str, tables: tuple[str, ...], deadline: float
    ) -> None:
        triggers = "".join(
            f"""
            DROP TRIGGER IF EXISTS faults_session_gate ON {t};
            CREATE CONSTRAINT TRIGGER faults_session_gate AFTER INSERT OR UPDATE OR DELETE
            ON {t} DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION faults_session_gate();"""
            for t in tables
        )
        h.sql(
            f"""
            CREATE OR REPLACE FUNCTION faults_session_gate() RETURNS trigger AS $$
            BEGIN
              IF current_setting('application_name') = '{app}' THEN
                PERFORM pg_advisory_xact_lock_shared({COMMIT_LOCK[0]}, 3);
              END IF;
              RETURN NULL;
            END $$ LANGUAGE plpgsql;
            {triggers}
            """
        )
        with h.db() as gate:
            while time.monotonic() < deadline:
                h.loop.call(gate.execute("SELECT pg_advisory_lock($1, 3)", COMMIT_LOCK[0]))
                waiting = _wait_for(
                    lambda: [
                        r["pid"]
                        for r in h.sql(
                            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                            " WHERE l.locktype = 'advisory' AND NOT l.granted"
                            " AND l.classid = $1 AND l.objid = 3 AND a.application_name = $2",
                            COMMIT_LOCK[0],
                            app,
                        )
                    ],
                    within_s=max(deadline - time.monotonic(), 0.5),
                )
                if waiting:
                    rows = h.sql(
                        "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity"
                        " WHERE pid = ANY($1)",
                        waiting,
                    )
                    self._killed += sum(1 for r in rows if r["ok"])
                h.loop.call(gate.execute("SELECT pg_advisory_unlock_all()"))
                time.sleep(0.3)

    def heal(self, h: Harness) -> None:
        tables = SESSION_ROLES[self.role][1]
        if self.state == "commit" and tables:
            h.sql(
                "".join(f"DROP TRIGGER IF EXISTS faults_session_gate ON {t}; " for t in tables)
                + "DROP FUNCTION IF EXISTS faults_session_gate();"
            )
        if self._api_load is not None:
            h.loop.loop.call_soon_threadsafe(self._api_load.set)
            self._api_task.result(timeout=60)  # type: ignore[attr-defined]
            if self._api_errors:
                self.notes.append(f"FAIL: the api answered {sorted(set(self._api_errors))}")
            self._api_load = None
        # The publisher must still be publishing: what was in the outbox now leaves it.
        newest = h.sql("SELECT coalesce(max(id), 0) AS id FROM kafka_outbox")[0]["id"]
        if not _wait_for(
            lambda: not h.sql("SELECT 1 FROM kafka_outbox WHERE id <= $1 LIMIT 1", newest),
            within_s=OUTBOX_DRAIN_S,
            interval=0.2,
        ):
            self.notes.append("FAIL: the outbox did not drain (the publisher stopped)")
        for service in [h.api, *h.live_members()]:
            assert service is not None
            answer = httpx.get(f"{service.url}/healthz", timeout=5)
            if answer.status_code != 200:
                self.notes.append(f"FAIL: {service.name} /healthz {answer.status_code}")


async def _terminate_while(
    conn: asyncpg.Connection, app: str, state: str, deadline: float, every_s: float
) -> int:
    killed = 0
    while time.monotonic() < deadline:
        killed += await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND state = $2 AND pid <> pg_backend_pid()",
            app,
            state,
        )
        await asyncio.sleep(every_s)
    return killed


async def _api_traffic(h: Harness, stopping: asyncio.Event, errors: list[int]) -> None:
    """Reads and profile writes through the api while its sessions are terminated: each
    answer is a 2xx/404, or a 503 (the session was lost; retried), never another 5xx."""
    assert h.api is not None
    headers = {"Authorization": f"Bearer {h.crm_key}"}
    n = 0
    async with httpx.AsyncClient(base_url=h.api.url, headers=headers, timeout=10) as client:
        while not stopping.is_set():
            n += 1
            customer = f"faults-profile-{n % 50}"
            try:
                if n % 2:
                    answer = await client.put(
                        f"/v1/customers/{customer}/profile",
                        json={"segment": "standard", "value": float(n % 7)},
                    )
                else:
                    answer = await client.get(f"/v1/customers/{customer}/health")
            except httpx.HTTPError:
                continue
            if answer.status_code >= 500 and answer.status_code != 503:
                errors.append(answer.status_code)
            await asyncio.sleep(0.02)


def session_faults() -> list[Fault]:
    return [SessionTerminate(role=r, state=s) for r in SESSION_ROLES for s in SESSION_STATES]


# --- the scenario --------------------------------------------------------------------------


def all_faults(round_: int) -> list[Fault]:
    return [
        BrokerKill(),
        BrokerFreeze(),
        ScoringKill(seed=round_),
        ScoringKillAtCommit(name="scoring-kill-in-commit-abort", point="abort"),
        ScoringKillAtCommit(name="scoring-kill-in-commit-complete", point="complete"),
        ScoringKillAtCommit(name="scoring-kill-after-commit", point="after"),
        MembersChurn(),
        IngestKill(),
        PostgresRestart(),
        PostgresLock(),
        ProxyFault(name="kafka-link-cut", target="kafka", mode="cut"),
        ProxyFault(name="kafka-link-blackhole", target="kafka", mode="blackhole", hold_s=7.0),
        ProxyFault(name="kafka-link-delay-200ms", target="kafka", mode="delay", delay_ms=200),
        ProxyFault(name="postgres-link-cut", target="postgres", mode="cut"),
        ProxyFault(name="postgres-link-blackhole", target="postgres", mode="blackhole", hold_s=7.0),
        ProxyFault(name="postgres-link-delay-100ms", target="postgres", mode="delay", delay_ms=100),
        Sigterm(name="ingest-sigterm", service="ingest"),
        Sigterm(name="scoring-sigterm", service="scoring"),
        Sigterm(name="api-sigterm", service="api"),
        ConsumerPastRetention(),
        # Terminated sessions: 24 rows (6 roles x 4 states), in the first round only, so the
        # soak stays near half an hour.
        *(session_faults() if round_ == 1 else []),
    ]


def quick_faults() -> list[Fault]:
    return [
        BrokerKill(),
        ScoringKill(seed=7),
        PostgresRestart(),
        Sigterm(name="ingest-sigterm", service="ingest"),
        SessionTerminate(role="consumer", state="idle-in-tx", hold_s=4.0),
    ]


def run_fault(
    h: Harness,
    fault: Fault,
    ledger: Ledger,
    driver: LoadDriver,
    *,
    phase: str,
    rate: float,
    warm_s: float = 2.0,
    after_s: float = 3.0,
) -> Result:
    started = time.monotonic()
    result = Result(fault=phase)
    stopping = asyncio.Event()
    load = h.loop.submit(driver.run(phase, rate, stopping))
    try:
        pace(warm_s)
        try:
            fault.inject(h)
            pace(fault.hold_s)
        except Exception as exc:  # reported as a failed fault, then healed
            result.notes.append(f"FAIL: harness error while injecting: {exc!r}")
        try:
            fault.heal(h)
        except Exception as exc:  # reported; the next fault starts anyway
            result.notes.append(f"FAIL: harness error while healing: {exc!r}")
            h.ensure_members()
        pace(after_s)
    finally:
        h.loop.loop.call_soon_threadsafe(stopping.set)
        load.result(timeout=SETTLE_S + 60)
    acked = ledger.ids(phase, ledger.acked)
    allowed = fault.allowed_missing(h)
    _missing, result.drain_s = h.loop.call(_drain_allowing(h, acked, allowed), timeout=None)
    counts = h.loop.call(check(h.direct_db, SOURCE, ledger, phase))
    result.acked = len(acked)
    result.rejected = len(ledger.ids(phase, ledger.rejected))
    result.indeterminate = len(ledger.ids(phase, ledger.indeterminate))
    result.reported_lost = min(allowed, counts["lost"])
    result.lost = counts["lost"] - result.reported_lost
    result.twice = counts["twice"]
    result.rejected_present = counts["rejected_present"]
    result.drift = counts["drift"]
    result.server_errors = ledger.server_errors
    result.server_errors_bad_input = ledger.server_errors_bad_input
    result.wrong_answers = ledger.wrong_answers
    result.retries = ledger.retries
    result.notes.extend(fault.notes)
    dead = h.check_alive()
    if dead:
        result.notes.append(f"FAIL: died on their own: {dead}")
    if ledger.wrong_answers:
        result.notes.append(f"FAIL: {ledger.wrong_answers} wrong answers (good 4xx / bad 2xx)")
    result.seconds = time.monotonic() - started
    return result


async def _drain_allowing(h: Harness, acked: set[str], allowed: int) -> tuple[int, float]:
    if not allowed:
        return await drain(h.direct_db, SOURCE, acked)
    # Reported-lost ids never arrive: wait for the rest, i.e. until the count stops moving
    # at or below what was reported (bounded like any drain).
    started = time.monotonic()
    last = -1
    while True:
        missing, _ = await drain(h.direct_db, SOURCE, acked, within_s=3.0)
        if missing <= allowed and missing == last:
            return missing, time.monotonic() - started
        if time.monotonic() - started > 180.0:
            return missing, time.monotonic() - started
        last = missing


def _api_reads(h: Harness, sample: int = 25) -> int:
    """Customers whose health read through the api (after every fault, the api restarted
    among them) differs from the stored state; the api is how the CRM sees the proof.

    Scoring keeps working after the drain (deadlines of the load fall due and the sweep
    records them), so a customer's stored score is read before and after the api's answer,
    and only an answer that differs from a score that held still counts as a mismatch.
    """
    customers = h.sql(
        "SELECT customer_id FROM journey_health ORDER BY customer_id LIMIT $1", sample
    )
    assert h.api is not None
    mismatches = 0
    for row in customers:
        for _ in range(5):
            before = _stored_score(h, row["customer_id"])
            answer = httpx.get(
                f"{h.api.url}/v1/customers/{row['customer_id']}/health",
                headers={"Authorization": f"Bearer {h.crm_key}"},
                timeout=10,
            )
            after = _stored_score(h, row["customer_id"])
            if before == after:
                break
        score = answer.json().get("score") if answer.status_code == 200 else "missing"
        if not (
            isinstance(score, float)
            and before is not None
            and before == after
            and math.isclose(score, before, rel_tol=1e-9)
        ):
            print(  # the report names what differed, so a failure can be read
                f"api mismatch: {row['customer_id']}: api {score!r} (status"
                f" {answer.status_code}), stored {before!r} then {after!r}"
            )
            mismatches += 1
    return mismatches


def _stored_score(h: Harness, customer_id: str) -> float | None:
    rows = h.sql("SELECT score FROM journey_health WHERE customer_id = $1", customer_id)
    score: float | None = rows[0]["score"] if rows else None
    return score


def summary_json(results: list[Result]) -> str:
    return json.dumps(
        [{k: v for k, v in r.__dict__.items() if k != "notes"} | {"ok": r.ok} for r in results]
    )


#: The whole run's counts when nothing went wrong.
ALL_ZERO = {"lost": 0, "rejected_present": 0, "twice": 0, "drift": 0, "api_mismatch": 0}


@dataclass
class Suite:
    results: list[Result]
    overall: dict[str, int]
    skipped: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results) and not any(self.overall.values())

    def assert_all_zero(self) -> None:
        """What every fault test asserts: no fault skipped; each row and the run as a whole
        at lost 0, counted twice 0, refused-but-stored 0, drift 0; no 5xx for bad input; the
        api's reads equal to the stored state."""
        assert not self.skipped, self.skipped
        for result in self.results:
            counts = (result.lost, result.twice, result.rejected_present, result.drift)
            assert counts == (0, 0, 0, 0), table([result])
            assert result.server_errors_bad_input == 0, table([result])
            assert result.ok, table([result])
        assert self.overall == ALL_ZERO, self.overall


def run_suite(
    rounds: list[list[Fault]],
    *,
    rate: float,
    deadline_s: float,
    scoring_members: int = 1,
    echo: Callable[[str], None] = print,
    seed: int = 1,
    harness: Callable[..., Harness] = Harness,
) -> Suite:
    """Every fault of every round under load, each checked; stops starting new faults once
    ``deadline_s`` (stack start included) is near, and names the ones it skipped."""
    started = time.monotonic()
    results: list[Result] = []
    skipped: list[str] = []
    ledger = Ledger()
    # ``harness`` names the topology (one broker and one database by default; a subclass
    # starts a three-broker cluster or a primary with its standby).
    with harness(scoring_members=scoring_members) as h:
        echo(f"stack up in {time.monotonic() - started:.0f} s; logs in {h.workdir}")
        driver = LoadDriver(
            ingest_url=f"http://127.0.0.1:{h.settings.ingest_port}",
            key=h.key,
            source=SOURCE,
            ledger=ledger,
            seed=seed,
        )
        for n, faults in enumerate(rounds, start=1):
            for fault in faults:
                phase = f"{fault.name}.{n}"
                # The longest fault (a broker restart plus a drain) takes about a minute.
                if time.monotonic() - started > deadline_s - 75:
                    skipped.append(phase)
                    continue
                before = (ledger.server_errors, ledger.server_errors_bad_input, ledger.retries)
                before_wrong = ledger.wrong_answers
                result = run_fault(h, fault, ledger, driver, phase=phase, rate=rate)
                result.server_errors -= before[0]
                result.server_errors_bad_input -= before[1]
                result.retries -= before[2]
                result.wrong_answers -= before_wrong
                results.append(result)
                echo(table([result]).splitlines()[-1 - len(result.notes)])
                for note in result.notes:
                    echo(f"    {note}")
        reported = sum(r.reported_lost for r in results)
        overall = h.loop.call(check(h.direct_db, SOURCE, ledger, None))
        # Over all phases, only the retention fault's reported ids may be missing.
        overall["lost"] = max(0, overall["lost"] - reported)
        overall["api_mismatch"] = _api_reads(h)
    return Suite(results, overall, skipped, time.monotonic() - started)
