"""Exactly one replica drives rollouts: a PostgreSQL advisory lock, or a lease row elsewhere."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col

from controlplane.db_models import utcnow
from controlplane.rollouts.models import ControllerLease

_LOGGER = logging.getLogger(__name__)

LEASE_NAME = "rollouts"
LEASE_S = 15.0
ADVISORY_KEY = 0x45465F524F4C4C  # "EF_ROLL"


class Leadership:
    """`acquire()` each tick: True while this replica is the one that drives rollouts."""

    def __init__(self, engine: Engine, holder: str, lease_s: float = LEASE_S) -> None:
        self.engine, self.holder, self.lease_s = engine, holder, lease_s
        self._pg = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self.is_leader = False

    def acquire(self) -> bool:
        """Take or keep leadership; False when another replica holds it."""
        try:
            held = self._advisory() if self._pg else self._lease()
        except SQLAlchemyError as exc:
            _LOGGER.warning("leadership check failed (%s); not driving rollouts", exc)
            self._drop_connection()
            held = False
        if held != self.is_leader:
            _LOGGER.info("%s %s rollout leadership", self.holder, "took" if held else "lost")
        self.is_leader = held
        return held

    def release(self) -> None:
        """Give leadership up (on shutdown) so another replica takes over at once."""
        if self._pg:
            self._unlock()
        elif self.is_leader:
            with Session(self.engine) as session:
                row = session.get(ControllerLease, LEASE_NAME)
                if row is not None and row.holder == self.holder:
                    session.delete(row)
                    session.commit()
        self.is_leader = False

    def _advisory(self) -> bool:
        # The lock belongs to one session-level connection kept open while we lead.
        if self._conn is None:
            self._conn = self.engine.connect()
        if self.is_leader:
            self._conn.execute(text("SELECT 1"))
            return True
        got = self._conn.execute(
            text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}
        ).scalar()
        self._conn.commit()
        return bool(got)

    def _unlock(self) -> None:
        # Unlock in the lock's own session: when this returns, another replica can take it.
        # Dropping the connection instead frees it only once the server has ended that
        # session, which may be after another replica's next try.
        if self._conn is None:
            return
        try:
            if self.is_leader:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                self._conn.commit()
            self._conn.close()
            self._conn = None
        except SQLAlchemyError as exc:
            _LOGGER.warning(
                "could not unlock rollout leadership (%s); dropping the connection", exc
            )
            self._drop_connection()

    def _drop_connection(self) -> None:
        # invalidate(), not close(): close() would hand the connection back to the pool with
        # the session-level lock still held; ending the database session is what frees it.
        if self._conn is not None:
            try:
                self._conn.invalidate()
            except SQLAlchemyError:
                pass
            self._conn = None

    def _lease(self) -> bool:
        now = utcnow()
        expires = now + timedelta(seconds=self.lease_s)
        with Session(self.engine) as session:
            result = session.execute(
                update(ControllerLease)
                .where(col(ControllerLease.name) == LEASE_NAME)
                .where(
                    (col(ControllerLease.holder) == self.holder)
                    | (col(ControllerLease.expires_at) < now)
                )
                .values(holder=self.holder, expires_at=expires)
            )
            if getattr(result, "rowcount", 0) == 1:
                session.commit()
                return True
            if session.get(ControllerLease, LEASE_NAME) is not None:
                return False
            session.add(ControllerLease(name=LEASE_NAME, holder=self.holder, expires_at=expires))
            try:
                session.commit()
            except IntegrityError:
                return False
            return True
