"""What an environment's jobs hold, what a new job may take, and which waiting jobs an engine claims next.

The one home of these rules: the API (``GET /computeEnvironments``, the refusal of a start that does not fit) and
both engines' claims (:class:`c2d.db.job_queue.JobQueue`) read them here. Everything is computed from
:class:`QueueEntry` rows (the unfinished jobs) and the database's clock; nothing here touches the database.

* **What a job holds**: the resources of its terms (``jobs.details.compute.resources``), or, for a job without
  terms (Provider v2.1), the environment's per-job maximum of each resource; one job slot of ``max_jobs``, and a
  free-tier slot when it is free.
* **Who holds**: a job claimed by an engine, until it finishes; and a waiting job *admitted at once* (ocean-node's
  protocol without ``queueMaxWaitTime``: it was checked against the room when it started; ocean-node counts it
  as running). Every other waiting job is *queued*.
* **Reservations**: a queued job that has waited ``queue_reserve_after`` seconds (the environment's setting)
  reserves its resources too: no later job, admitted or queued, takes them, so the room it needs gathers as
  running jobs end, however big it is.
* **Expiry**: a job started through ocean-node's protocol with ``queueMaxWaitTime`` > 0 that is still waiting
  after that many seconds ends with status 2 (:func:`expired`). Other jobs wait as long as it takes.
* **Claim order** (:func:`plan_claims`): first the jobs that hold or reserve (admitted or waited past
  ``queue_reserve_after``), oldest first, each within what the claimed jobs and the reservations before it leave
  (one that does not fit keeps its reservation); then the other queued jobs in fair order: among those that fit
  what is left, the consumer with the fewest claimed jobs (node-wide, counting the claims of this round) first,
  then the oldest. A job that does not fit is passed over (smaller jobs behind it go first) until it has waited
  ``queue_reserve_after``; then it reserves and goes first. A job of an environment the node does not declare is
  measured against nothing (only the engine's own limit).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from c2d.db.job_records import ComputeTerms
from c2d.environments import ComputeEnvironment

EPSILON = 1e-9  # amounts are sums of floats: 0.1 + 0.2 fits in 0.3


def held_by(env: ComputeEnvironment, terms: ComputeTerms | None) -> dict[str, float]:
    """What a job of ``env`` holds of each resource: its terms' amounts, what the environment gives a job that does
    not ask for any not named (all of them for a job without terms: the per-job maximum, and ``gpus`` GPUs)."""
    amounts = (terms or {}).get("resources") or {}
    return {r.id: float(amounts.get(r.id, env.per_job(r.id))) for r in env.resource_table()}


@dataclass(frozen=True)
class QueueEntry:
    """One unfinished job, as the queue sees it. ``owner``: lower-case; ``claimed``: an engine took it (status
    above 1); ``terms``: ``jobs.details.compute`` (None for a Provider v2.1 job)."""

    job_id: str
    owner: str
    environment: str
    engine: str
    created: datetime
    claimed: bool
    terms: ComputeTerms | None

    @property
    def free(self) -> bool:
        return bool((self.terms or {}).get("free"))

    @property
    def queue_wait(self) -> float:
        """Seconds it may wait for room (0: it does not expire)."""
        return float((self.terms or {}).get("queueMaxWaitTime") or 0)

    @property
    def admitted(self) -> bool:
        """Waiting, started through ocean-node's protocol without a queue wait: it fitted when it started."""
        return not self.claimed and self.terms is not None and self.queue_wait <= 0

    @property
    def holds(self) -> bool:
        return self.claimed or self.admitted

    def waited(self, now: datetime) -> float:
        return (now - self.created).total_seconds()

    def reserves(self, env: ComputeEnvironment, now: datetime) -> bool:
        """Waiting, and either admitted or queued for ``queue_reserve_after`` seconds or more."""
        return not self.claimed and (self.admitted or self.waited(now) >= env.queue_reserve_after)


def expired(entry: QueueEntry, now: datetime) -> bool:
    """Still waiting after its ``queueMaxWaitTime`` (ocean-node's rule: waited strictly longer)."""
    return not entry.claimed and entry.queue_wait > 0 and entry.waited(now) > entry.queue_wait


@dataclass
class Capacity:
    """What is left of one environment: each resource, job slots, free-job slots. Reservations may take it below
    zero (then nothing fits until running jobs end)."""

    env: ComputeEnvironment
    room: dict[str, float] = field(init=False)
    slots: int = field(init=False)
    free_slots: int = field(init=False)

    def __post_init__(self) -> None:
        self.room = {r.id: r.total for r in self.env.resource_table()}
        self.slots = self.env.max_jobs
        self.free_slots = self.env.free.max_jobs if self.env.free is not None else 0

    def refusal(self, amounts: Mapping[str, float], free: bool) -> str | None:
        """Why a job of ``amounts`` does not fit now, in ocean-node's words (checkIfResourcesAreAvailable), or
        None when it fits."""
        for resource in self.env.resource_table():
            if self.room[resource.id] + EPSILON < amounts.get(resource.id, resource.max):
                return f"Not enough available {resource.id}"
        if self.slots < 1:
            return "Too many running jobs "
        if free and self.env.free is not None and self.free_slots < 1:
            return "Too many running free jobs "
        return None

    def entry_refusal(self, entry: QueueEntry) -> str | None:
        return self.refusal(held_by(self.env, entry.terms), entry.free)

    def take(self, entry: QueueEntry) -> None:
        for name, amount in held_by(self.env, entry.terms).items():
            self.room[name] -= amount
        self.slots -= 1
        self.free_slots -= 1 if entry.free else 0


@dataclass(frozen=True)
class Usage:
    """One environment now, as ``GET /computeEnvironments`` reports it: what the holding jobs hold (``in_use``,
    ocean-node's ``inUse``), how many hold (``running``) and wait (``queued``), and ``capacity``: what a job
    admitted now may take (after the holding jobs and the reservations)."""

    in_use: dict[str, float]
    running: int
    running_free: int
    queued: int
    queued_free: int
    capacity: Capacity


def usage(env: ComputeEnvironment, entries: Iterable[QueueEntry], now: datetime) -> Usage:
    """``env``'s usage from the unfinished jobs (those of other environments are ignored)."""
    mine = sorted((e for e in entries if e.environment == env.id), key=lambda e: e.created)
    capacity = Capacity(env)
    in_use: dict[str, float] = {r.id: 0.0 for r in env.resource_table()}
    running = [e for e in mine if e.holds]
    queued = [e for e in mine if not e.holds]
    for entry in running:
        capacity.take(entry)
        for name, amount in held_by(env, entry.terms).items():
            in_use[name] += amount
    for entry in queued:
        if entry.reserves(env, now):
            capacity.take(entry)
    return Usage(
        in_use=in_use,
        running=len(running),
        running_free=sum(e.free for e in running),
        queued=len(queued),
        queued_free=sum(e.free for e in queued),
        capacity=capacity,
    )


def plan_claims(
    environments: Sequence[ComputeEnvironment], entries: Iterable[QueueEntry], engine: str, limit: int, now: datetime
) -> list[QueueEntry]:
    """The waiting jobs of ``engine`` to claim now, at most ``limit``, in the order of the module's rules.
    ``entries``: every unfinished job (of every engine: the claimed ones hold their environment's room)."""
    capacities = {env.id: Capacity(env) for env in environments}
    entries = list(entries)
    running = Counter(e.owner for e in entries if e.claimed)
    for entry in entries:
        if entry.claimed and entry.environment in capacities:
            capacities[entry.environment].take(entry)
    waiting = sorted((e for e in entries if not e.claimed and e.engine == engine), key=lambda e: e.created)
    picks: list[QueueEntry] = []
    queued: list[QueueEntry] = []
    for entry in waiting:  # 1. the jobs that hold or reserve, oldest first
        capacity = capacities.get(entry.environment)
        if capacity is None or not entry.reserves(capacity.env, now):
            queued.append(entry)
            continue
        if len(picks) < limit and capacity.entry_refusal(entry) is None:
            picks.append(entry)
            running[entry.owner] += 1
        capacity.take(entry)  # claimed, or still reserving
    while len(picks) < limit:  # 2. the others, fairly
        fitting = [e for e in queued if _fits(capacities.get(e.environment), e)]
        if not fitting:
            break
        pick = min(fitting, key=lambda e: (running[e.owner], e.created))
        queued.remove(pick)
        picks.append(pick)
        running[pick.owner] += 1
        if (capacity := capacities.get(pick.environment)) is not None:
            capacity.take(pick)
    return picks


def _fits(capacity: Capacity | None, entry: QueueEntry) -> bool:
    return capacity is None or capacity.entry_refusal(entry) is None
