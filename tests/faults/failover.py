"""The primary database lost under load: a primary with a synchronous standby, failover.

:class:`FailoverHarness` runs the fault harness's stack on a :class:`LocalPostgresPair`; the
services get the pair's multi-host URL (``target_session_attrs=read-write``) and must find
the writable server by themselves, before and after a failover, without a restart.

No :class:`FaultProxy` stands between the services and the pair. A proxy in front of a
dead server accepts the connection and then resets it; asyncpg (like libpq) treats a
connection refused as "try the next host" but a connection reset after it was accepted as
a failure of the whole connect, so the proxy would change what a client of a dead primary
sees. Without it a dead server refuses, as a lost machine behind a load balancer or a
Kubernetes service with no ready endpoint does. The link faults (cut, blackhole, delay) keep
running through the proxy on one server in :mod:`tests.faults.faults`.

Faults (each heals by rewinding the fenced old primary into the new primary's synchronous
standby, so the pair is whole again for the next one):

- ``postgres-failover``: the primary SIGKILLed at a random point under load, the standby
  promoted, the old primary fenced (kept down until it is rewound);
- ``postgres-failover-in-commit``: the same, with commits stalled where the standby has
  flushed their WAL but the primary has not told the client: the primary waits for the
  standby to *apply* (``synchronous_commit = remote_apply``) and the standby's replay is
  paused. Promotion replays them: they are committed on the new primary while scoring got
  an error for them — the ambiguous commit its offsets and dedupe must resolve.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from tests.faults.faults import Fault, Suite, _wait_for, run_suite
from tests.faults.harness import Harness, Service, pace
from touchpulse_shared.stack.postgres import LocalPostgres, LocalPostgresPair

CONSUMER_APP = "touchpulse-scoring/consumer"
# After a failover the api must be ready and scoring applying again, by themselves, within
# this.
READY_AGAIN_S = 60.0


class FailoverHarness(Harness):
    """The harness on a primary with its synchronous standby (see the module's doc)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pair: LocalPostgresPair | None = None

    def start_postgres(self) -> tuple[str, str]:
        self.pair = LocalPostgresPair(workdir=self.workdir / "postgres")
        self.pair.start()
        # The same multi-host URL for the harness and the services: no proxy (see above).
        return self.pair.url, self.pair.url

    @property
    def direct_db(self) -> str:
        # The multi-host URL finds the current primary, as the services' does.
        assert self.pair is not None
        return self.pair.url

    def close(self) -> None:
        super().close()
        if self.pair is not None:
            self.pair.stop()

    def node_sql(self, node: LocalPostgres, query: str, *args: object) -> list[asyncpg.Record]:
        """Rows of one query on one server of the pair (the primary or the standby)."""

        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(node.url, timeout=10)
            try:
                rows: list[asyncpg.Record] = await conn.fetch(query, *args)
                return rows
            finally:
                await conn.close()

        return self.loop.call(run())

    def services(self) -> list[Service]:
        return [s for s in [self.ingest, self.api, *self.live_members()] if s is not None]


def _ready(service: Service) -> bool:
    try:
        return httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class PrimaryFailover(Fault):
    """SIGKILL of the primary under load, the standby promoted, the old primary fenced; the
    api must be ready and scoring applying again by themselves (none restarted), and at the
    heal the old primary is rewound into the new primary's synchronous standby."""

    name: str = "postgres-failover"
    hold_s: float = 3.0
    seed: int = 1

    def inject(self, h: Harness) -> None:
        assert isinstance(h, FailoverHarness)
        assert h.pair is not None
        pace(random.Random(self.seed).uniform(0.0, 2.0))  # a random point in the stream
        self._failover(h)

    def _failover(self, h: FailoverHarness) -> None:
        assert h.pair is not None
        started = time.monotonic()
        old = h.pair.kill_primary()
        new = h.pair.promote()
        h.pair.fence()
        promoted = time.monotonic()
        self.notes.append(
            f"primary {h.pair.name(old)} killed, {h.pair.name(new)} promoted in"
            f" {promoted - started:.1f} s; {h.pair.name(old)} fenced (down)"
        )
        # The services find the new primary by themselves: the api's readiness is a query
        # through its pool, and scoring's progress is events applied after the promotion.
        applied = _applied(h)
        api = h.api
        assert api is not None
        api_ready = _wait_for(
            lambda: _ready(api) and time.monotonic(), within_s=READY_AGAIN_S, interval=0.05
        )
        scoring = _wait_for(
            lambda: _applied(h) > applied and time.monotonic(),
            within_s=READY_AGAIN_S,
            interval=0.05,
        )
        if not api_ready or not scoring:
            self.notes.append(
                f"FAIL: within {READY_AGAIN_S:.0f} s of the promotion: api ready"
                f" {bool(api_ready)}, scoring applying {bool(scoring)}"
            )
        else:
            self.notes.append(
                f"after the promotion: the api ready in {api_ready - promoted:.1f} s,"
                f" scoring applying in {scoring - promoted:.1f} s"
            )

    def heal(self, h: Harness) -> None:
        assert isinstance(h, FailoverHarness)
        assert h.pair is not None
        # None was restarted (run_fault names any that died): all ready, scoring not stuck.
        unready = [s.name for s in h.services() if not _ready(s)]
        stuck = [m.name for m in h.live_members() if not _healthy(m)]
        if unready or stuck:
            self.notes.append(f"FAIL: not ready {unready}, not healthy {stuck}")
        fenced = h.pair.fenced
        assert fenced is not None
        if fenced.running:
            self.notes.append(f"FAIL: the fenced {h.pair.name(fenced)} is running")
        h.pair.rejoin()
        self.notes.append(f"{h.pair.name(fenced)} rewound into the synchronous standby")


def _applied(h: FailoverHarness) -> int:
    """Events scoring has applied, read on the current primary (0 while there is none)."""
    assert h.pair is not None
    try:
        rows = h.node_sql(h.pair.primary, "SELECT count(*) AS n FROM processed_event")
    except (OSError, asyncpg.PostgresError):
        return 0
    return int(rows[0]["n"])


def _healthy(service: Service) -> bool:
    try:
        return httpx.get(f"{service.url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class PrimaryFailoverInCommit(PrimaryFailover):
    """The failover while commits are stalled with their WAL on the standby (see the
    module's doc); scoring's consumer commit among them, which must be found committed on
    the new primary: the client was never told, the retry must not apply it twice."""

    name: str = "postgres-failover-in-commit"
    hold_s: float = 2.0

    def inject(self, h: Harness) -> None:
        assert isinstance(h, FailoverHarness)
        assert h.pair is not None
        primary, standby = h.pair.primary, h.pair.standby
        assert standby is not None
        h.node_sql(primary, "ALTER SYSTEM SET synchronous_commit = remote_apply")
        h.node_sql(primary, "SELECT pg_reload_conf()")
        h.node_sql(standby, "SELECT pg_wal_replay_pause()")
        # Sessions read the reload at their next statement; a consumer commit after it
        # waits for the standby's replay, which does not come ('SyncRep').
        stalled = _wait_for(
            lambda: h.node_sql(
                primary,
                "SELECT pid, backend_xid::text AS xid FROM pg_stat_activity"
                " WHERE wait_event = 'SyncRep' AND application_name = $1"
                " AND backend_xid IS NOT NULL",
                CONSUMER_APP,
            ),
            within_s=30.0,
            interval=0.01,
        )
        if not stalled:
            self.notes.append("FAIL: no consumer commit was stalled on the standby")
            h.node_sql(standby, "SELECT pg_wal_replay_resume()")
            self._failover(h)
            return
        # Their commit records are flushed on the primary: wait until the standby has them.
        flushed = h.node_sql(primary, "SELECT pg_current_wal_flush_lsn()::text AS lsn")[0]["lsn"]
        received = _wait_for(
            lambda: h.node_sql(
                standby, "SELECT pg_last_wal_receive_lsn() >= $1::text::pg_lsn AS ok", flushed
            )[0]["ok"],
            within_s=10.0,
            interval=0.01,
        )
        if not received:
            self.notes.append("FAIL: the standby did not receive the stalled commits")
        self._failover(h)
        assert h.pair is not None
        # A fresh cluster is in xid epoch 0: the 32-bit xid is the full one.
        states = [
            h.node_sql(h.pair.primary, "SELECT pg_xact_status($1::text::xid8) AS s", row["xid"])[0][
                "s"
            ]
            for row in stalled
        ]
        self.notes.append(
            f"{len(stalled)} consumer commit(s) stalled on the standby, client never told;"
            f" on the new primary: {', '.join(states)}"
        )
        if "committed" not in states:
            self.notes.append("FAIL: no stalled consumer commit was committed by promotion")

    def heal(self, h: Harness) -> None:
        assert isinstance(h, FailoverHarness)
        assert h.pair is not None
        # The new primary's settings came from before the fault; reset, to be sure.
        h.node_sql(h.pair.primary, "ALTER SYSTEM RESET synchronous_commit")
        h.node_sql(h.pair.primary, "SELECT pg_reload_conf()")
        super().heal(h)


def failover_faults(round_: int) -> list[Fault]:
    return [PrimaryFailover(seed=round_), PrimaryFailoverInCommit()]


def run_failover(
    *, rounds: int = 1, rate: float, deadline_s: float, scoring_members: int = 2
) -> Suite:
    """The failover faults under load, ``rounds`` times, on their own stack."""
    return run_suite(
        [failover_faults(n) for n in range(1, rounds + 1)],
        rate=rate,
        deadline_s=deadline_s,
        scoring_members=scoring_members,
        harness=FailoverHarness,
    )
