"""Portable SQL for one-at-a-time background jobs (part of ``KeyTx``): a lapsing claim per job name."""
from __future__ import annotations

from typing import Any, Protocol


class JobTx(Protocol):
    def claim_job(self, name: str, owner: str, now: float, lease_s: float) -> bool: ...


class SqlJobs:
    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    def claim_job(self, name: str, owner: str, now: float, lease_s: float) -> bool:
        """True when ``owner`` holds the claim on ``name`` until ``now + lease_s``: it was free, lapsed,
        or already ``owner``'s. Exactly one of several concurrent claimers wins."""
        cur = self._run("INSERT INTO job_claims(name, owner, until) VALUES (?,?,?)"
                        " ON CONFLICT(name) DO UPDATE SET owner=excluded.owner, until=excluded.until"
                        " WHERE job_claims.until<=? OR job_claims.owner=excluded.owner",
                        (name, owner, now + lease_s, now))
        return cur.rowcount == 1
