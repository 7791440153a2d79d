"""The node's escrow settlement, in the background: at start, then every ``C2D_PROVIDER__ESCROW_SETTLE_SECONDS``.

Each round runs :func:`c2d.escrow_settlement.settle` (claim what finished jobs cost, give back the rest, repair
locks a crash left behind) and writes each settled lock's transactions and cost into its job's payment
(``jobs.details.compute.payment``: the status shows ``claimTx``/``cancelTx``/``cost``).
"""

from __future__ import annotations

import logging

from c2d.db.jobs import JobStore
from c2d.escrow_settlement import settle
from c2d.exceptions import C2DError
from provider.payments import Payments
from provider.periodic import Periodic
from provider.status_cache import StatusCache

log = logging.getLogger(__name__)


class EscrowSettler(Periodic):
    name = "escrow"
    done_message = "settled %d escrow lock(s)"

    def __init__(self, payments: Payments, jobs: JobStore, statuses: StatusCache, interval: float) -> None:
        super().__init__(interval)
        self.payments = payments
        self.jobs = jobs
        self.statuses = statuses

    def run_once(self) -> int:
        payments = self.payments
        if payments.escrow is None:
            return 0
        try:
            report = settle(payments.locks, payments.escrow, payments.account, self.jobs, payments.cost_of)
        except C2DError as exc:  # the chain is away: the next round tries again, nothing is lost
            log.warning("escrow: settlement postponed: %s", exc)
            return 0
        settled = [*report.claimed, *report.released]
        for job_id in settled:
            self._record(job_id)
        return len(settled)

    def _record(self, job_id: str) -> None:
        row = self.payments.locks.get(job_id)
        job = self.jobs.get(job_id)
        if row is None or job is None or "compute" not in job.details:
            return
        terms = job.details["compute"]
        payment = terms.get("payment")
        if payment is None:
            return
        if row.claim_tx:
            payment["claimTx"] = row.claim_tx
            payment["cost"] = str(row.cost_wei or 0)
        elif row.release_tx:
            payment["cancelTx"] = row.release_tx
            payment["cost"] = "0"
        self.jobs.update_details(job_id, {"compute": terms})
        self.statuses.drop(job.owner)
