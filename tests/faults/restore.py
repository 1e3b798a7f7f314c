"""The restore drill: the database lost and restored from a base backup and its WAL archive
to a point in time, while events keep flowing; scoring catches up from Kafka by itself.

The timeline, with load through ingest all along (each stretch its own ledger phase; the
next stretch's load starts before the previous one stops, so events never pause):

1. ``pitr-base``: a base backup (``pg_basebackup``) is taken while events are scored.
2. ``pitr-archived``: events scored after the backup ended: only the WAL archive has them.
3. The restore target ``T`` (the server's clock), then ``pitr-after-t``: events scored after
   ``T``, which the restore must drop; the WAL is switched so that the archive holds ``T``.
4. The disaster: scoring and the api stopped, the PostgreSQL server killed with its whole
   process group and its data directory deleted. Ingest goes on acknowledging (Kafka is up).
5. The restore: the backup copied into a new data directory, replayed from the archive to
   ``T`` and promoted; the services' proxy now points at it. Checked right then, before
   scoring starts: every ``pitr-archived`` event scored before ``T`` is there (the archive was
   replayed, not just the backup), no ``pitr-after-t`` event is (the database is really behind),
   and the stored offsets are behind those the lost server had.
6. The api and scoring start again; ``pitr-restored`` load. Scoring resumes from the offsets
   in the restored database (never from Kafka's committed offsets, which are ahead: those
   would skip what the restore dropped) and applies everything since ``T`` from Kafka.
7. The drain and the ledger check over every phase: lost 0, counted twice 0, nothing
   refused stored, drift 0 against a recomputation from the stored outcomes, and the api's
   reads equal to the stored state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tests.faults.check import Result, check, drain, table
from tests.faults.faults import _api_reads
from tests.faults.harness import SOURCE, Harness, pace
from tests.faults.ledger import SETTLE_S, Ledger, LoadDriver
from touchpulse_shared.stack.pitr import (
    RestoredPostgres,
    archive_now,
    archive_settings,
    base_backup,
    make_archive,
)
from touchpulse_shared.stack.postgres import LocalPostgres
from touchpulse_shared.stack.procs import wait_until

PHASES = ("pitr-base", "pitr-archived", "pitr-after-t", "pitr-restored")
# Events of a phase that must be scored before the drill moves on: enough to tell "there"
# from "not there" without waiting long.
APPLIED_BEFORE_MOVING_ON = 30
APPLIED_WAIT_S = 60.0
# Scoring catches up in seconds here; a drill that does not finish within these is failed
# with its report (a test timeout would show nothing).
CATCH_UP_S = 90.0
BACKUP_DIR = "base-backup"
ARCHIVE_DIR = "wal-archive"
FINAL_DRAIN_S = 60.0


class ArchivingHarness(Harness):
    """The fault harness with a PostgreSQL server that archives its WAL, and a restore."""

    archive: Path

    def start_postgres(self) -> tuple[str, str]:
        self.archive = make_archive(self.workdir / ARCHIVE_DIR)
        self.postgres = LocalPostgres(
            workdir=self.workdir / "postgres", server_settings=archive_settings(self.archive)
        )
        self.postgres.start()
        self.pg_proxy.target_port = self.postgres.port
        proxied = self.postgres.url.replace(f":{self.postgres.port}/", f":{self.pg_proxy.port}/")
        return self.postgres.url, proxied

    def close(self) -> None:
        super().close()
        # The servers' logs stay with the run's other logs; the base backup and the archive
        # (about 100 MB a run) go: the fault runs' folders are kept for their logs.
        shutil.rmtree(self.workdir / BACKUP_DIR, ignore_errors=True)
        shutil.rmtree(self.workdir / ARCHIVE_DIR, ignore_errors=True)

    def lose_database(self) -> None:
        """The machine is gone: every PostgreSQL process SIGKILLed at once (no shutdown
        checkpoint, no last archiving), then its data directory deleted."""
        assert self.postgres is not None
        assert self.postgres.pid is not None
        # The postmaster leads its own session (spawn): its group is every backend too.
        os.killpg(self.postgres.pid, signal.SIGKILL)
        self.postgres.stop()  # reaps it and removes the data directory

    def restore(self, backup: Path, target_time: datetime) -> RestoredPostgres:
        """A new server from ``backup`` and the archive, recovered to ``target_time``; the
        services' proxy is pointed at it (their database URL does not change)."""
        restored = RestoredPostgres(
            workdir=self.workdir / "postgres-restored",
            backup=backup,
            archive=self.archive,
            target_time=target_time,
        )
        restored.start()
        self.postgres = restored
        self.pg_proxy.target_port = restored.port
        return restored


@dataclass
class Drill:
    """What the drill measured; :meth:`problems` says what is wrong (nothing, or the list)."""

    result: Result
    api_mismatch: int = 0
    target_time: datetime | None = None
    backup_s: float = 0.0
    recovery_s: float = 0.0
    catch_up_s: float = 0.0
    #: pitr-archived events scored before T: the restored database must hold them all.
    archived_before_t: int = 0
    archived_missing_after_restore: int = 0
    #: pitr-after-t events scored before the loss: the restored database must hold none.
    after_t_scored_before_loss: int = 0
    after_t_present_after_restore: int = 0
    #: acknowledged ids the restored database lacked before scoring started again
    behind_after_restore: int = 0
    offsets_before_loss: int = 0
    offsets_after_restore: int = 0
    #: acknowledged events per phase: load flowed in each stretch
    acked_by_phase: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = [n for n in self.result.notes if n.startswith("FAIL")]
        r = self.result
        counts = (r.lost, r.twice, r.rejected_present, r.drift)
        if counts != (0, 0, 0, 0):
            found.append(f"lost/twice/4xx stored/drift = {counts}")
        if r.server_errors or r.server_errors_bad_input or r.wrong_answers:
            found.append(
                f"5xx {r.server_errors}, 5xx to bad input {r.server_errors_bad_input},"
                f" wrong answers {r.wrong_answers}"
            )
        if self.api_mismatch:
            found.append(f"{self.api_mismatch} api reads differ from the stored state")
        if self.archived_before_t < APPLIED_BEFORE_MOVING_ON:
            found.append(f"only {self.archived_before_t} archived-only events scored before T")
        if self.archived_missing_after_restore:
            found.append(
                f"{self.archived_missing_after_restore} events scored before T are missing"
                " after the restore (the archive was not replayed to T)"
            )
        if self.after_t_scored_before_loss < APPLIED_BEFORE_MOVING_ON:
            found.append(
                f"only {self.after_t_scored_before_loss} events scored after T before the loss:"
                " the restore had nothing to drop"
            )
        if self.after_t_present_after_restore:
            found.append(
                f"{self.after_t_present_after_restore} events scored after T are in the"
                " restored database (it was not restored to T)"
            )
        idle = [p for p in PHASES if not self.acked_by_phase.get(p)]
        if idle:
            found.append(f"no event acknowledged in {idle}")
        if not self.behind_after_restore:
            found.append("the restored database lacked no acknowledged event: it proves nothing")
        if not self.offsets_after_restore < self.offsets_before_loss:
            found.append(
                f"stored offsets after the restore ({self.offsets_after_restore}) are not"
                f" behind the lost server's ({self.offsets_before_loss})"
            )
        return found

    def report(self) -> str:
        facts = [
            f"restore target T = {self.target_time}",
            f"base backup {self.backup_s:.1f} s; recovery to T and promotion"
            f" {self.recovery_s:.1f} s; scoring caught up in {self.catch_up_s:.1f} s",
            f"scored before T from the archive only: {self.archived_before_t}"
            f" (missing after restore: {self.archived_missing_after_restore})",
            f"scored after T before the loss: {self.after_t_scored_before_loss}"
            f" (present after restore: {self.after_t_present_after_restore})",
            f"acknowledged per phase: {self.acked_by_phase}",
            f"acknowledged but absent right after the restore: {self.behind_after_restore}",
            f"stored offsets (sum over partitions): {self.offsets_before_loss} before the loss,"
            f" {self.offsets_after_restore} after the restore",
            f"api reads differing from the stored state: {self.api_mismatch}",
        ]
        return "\n".join([table([self.result]), *facts, *self.notes])


class _Load:
    """Load through ingest, one ledger phase at a time, without a pause between phases."""

    def __init__(self, h: Harness, driver: LoadDriver, rate: float) -> None:
        self.h = h
        self.driver = driver
        self.rate = rate
        self._running: tuple[asyncio.Event, concurrent.futures.Future[None]] | None = None

    def switch(self, phase: str | None) -> None:
        """Start ``phase``'s load (None: none), then stop the previous one: its requests in
        flight still get their definitive answers."""
        previous = self._running
        self._running = None
        if phase is not None:
            stopping = asyncio.Event()
            self._running = (
                stopping,
                self.h.loop.submit(self.driver.run(phase, self.rate, stopping)),
            )
        if previous is not None:
            self.h.loop.loop.call_soon_threadsafe(previous[0].set)
            previous[1].result(timeout=SETTLE_S + 60)


def _acked(h: Harness, ledger: Ledger, phase: str | None = None) -> set[str]:
    """A copy of the acknowledged ids (of ``phase``), taken on the loop that writes them."""

    async def copy() -> set[str]:
        return set(ledger.acked) if phase is None else ledger.ids(phase, ledger.acked)

    return h.loop.call(copy())


def _present(h: Harness, ids: set[str]) -> set[str]:
    rows = h.sql(
        "SELECT event_id FROM processed_event WHERE source = $1 AND event_id = ANY($2)",
        SOURCE,
        sorted(ids),
    )
    return {r["event_id"] for r in rows}


def _scored(h: Harness, ledger: Ledger, phase: str, at_least: int) -> set[str]:
    """Wait until ``at_least`` of ``phase``'s acknowledged events are scored; those scored."""
    seen: set[str] = set()

    def enough() -> bool:
        seen.clear()
        seen.update(_present(h, _acked(h, ledger, phase)))
        return len(seen) >= at_least

    wait_until(enough, timeout=APPLIED_WAIT_S, what=f"{at_least} {phase} events scored")
    return set(seen)


def _offsets(h: Harness) -> int:
    return int(h.sql("SELECT coalesce(sum(next_offset), 0) AS n FROM consumer_offset")[0]["n"])


def run_drill(h: ArchivingHarness, *, rate: float, seed: int = 1, warm_s: float = 2.0) -> Drill:
    started = time.monotonic()
    ledger = Ledger()
    driver = LoadDriver(
        ingest_url=f"http://127.0.0.1:{h.settings.ingest_port}",
        key=h.key,
        source=SOURCE,
        ledger=ledger,
        seed=seed,
    )
    drill = Drill(result=Result(fault="restore-drill"))
    load = _Load(h, driver, rate)
    backup = h.workdir / BACKUP_DIR
    try:
        # 1. A base backup while events are scored.
        load.switch("pitr-base")
        pace(warm_s)
        t0 = time.monotonic()
        assert h.postgres is not None
        base_backup(h.postgres, backup)
        drill.backup_s = time.monotonic() - t0

        # 2. Events scored after the backup: in the WAL archive only.
        load.switch("pitr-archived")
        drill.archived_before_t = len(
            archived := _scored(h, ledger, "pitr-archived", APPLIED_BEFORE_MOVING_ON)
        )

        # 3. The restore target, then events scored after it.
        target: datetime = h.sql("SELECT clock_timestamp() AS t")[0]["t"]
        drill.target_time = target
        load.switch("pitr-after-t")
        drill.after_t_scored_before_loss = len(
            _scored(h, ledger, "pitr-after-t", APPLIED_BEFORE_MOVING_ON)
        )
        # The archive must reach past T (recovery stops at the first commit after it).
        archive_now(h.direct_db)
        drill.offsets_before_loss = _offsets(h)

        # 4. The disaster. Ingest stays up: clients keep getting 202s from Kafka.
        for member in h.live_members():
            member.terminate()
        assert h.api is not None
        h.api.terminate()
        h.lose_database()

        # 5. The restore, checked before scoring may write to it.
        restored = h.restore(backup, target)
        drill.recovery_s = restored.recovery_s
        drill.archived_missing_after_restore = len(archived - _present(h, archived))
        drill.after_t_present_after_restore = len(_present(h, _acked(h, ledger, "pitr-after-t")))
        everything = _acked(h, ledger)
        drill.behind_after_restore = len(everything - _present(h, everything))
        drill.offsets_after_restore = _offsets(h)

        # 6. The services back; scoring resumes from the restored offsets.
        t0 = time.monotonic()
        h.api.start()
        h.ensure_members()
        load.switch("pitr-restored")
        caught_up = _acked(h, ledger)
        missing, _ = h.loop.call(
            drain(h.direct_db, SOURCE, caught_up, within_s=CATCH_UP_S), timeout=None
        )
        drill.catch_up_s = time.monotonic() - t0
        if missing:
            drill.result.notes.append(f"FAIL: {missing} events not caught up after the restore")
        # Events keep coming into the restored system for a while after it caught up.
        pace(2.0)
    finally:
        load.switch(None)

    # 7. Everything acknowledged, in every phase, once; the state as recomputed.
    acked = _acked(h, ledger)
    _missing, drill.result.drain_s = h.loop.call(
        drain(h.direct_db, SOURCE, acked, within_s=FINAL_DRAIN_S), timeout=None
    )
    counts = h.loop.call(check(h.direct_db, SOURCE, ledger, None))
    r = drill.result
    r.acked = len(acked)
    drill.acked_by_phase = {p: len(_acked(h, ledger, p)) for p in PHASES}
    r.rejected = len(ledger.rejected)
    r.indeterminate = len(ledger.indeterminate)
    r.lost, r.twice = counts["lost"], counts["twice"]
    r.rejected_present, r.drift = counts["rejected_present"], counts["drift"]
    r.server_errors = ledger.server_errors
    r.server_errors_bad_input = ledger.server_errors_bad_input
    r.wrong_answers = ledger.wrong_answers
    r.retries = ledger.retries
    dead = h.check_alive()
    if dead:
        r.notes.append(f"FAIL: died on their own: {dead}")
    drill.api_mismatch = _api_reads(h)
    r.seconds = time.monotonic() - started
    return drill
