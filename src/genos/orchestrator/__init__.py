"""The orchestrator: lifecycle, registry, events, queue and reconcile of environments.

How the package is laid out, from the API down:

- ``engine``: :class:`Engine`, the async API the HTTP layer and CLI call
  (request, wait, suspend, resume, terminate, cancel, get, list, events,
  activity, host, reconcile, tick); ``verbs`` and ``reads`` are its mixins
  (changing one environment; reading them).
- ``placing``: where an admitted environment goes (this host, or a
  cluster's node through :mod:`genos.cluster.placement`).
- ``admission``: the capacity queue and the provisioning tasks;
  ``provision``: one environment's create/start steps and progress events.
- ``timers``: TTL and idle deadlines with warnings; ``reconcile``: make the
  registry and the host agree.
- ``lifecycle``: record-then-act transitions, events, per-environment locks.
- ``states``: the :class:`State` enum and its transition table.
- ``capacity``: host capacity, usage, per-user quotas, the queue's view.
- ``registry`` (async facade, a thread pool) over ``queries`` (the SQL) and
  ``accounts`` (users, API tokens); ``models``: the tables; ``database``:
  connecting (SQLite durability settings, PostgreSQL by URL) and migrating;
  ``migrations/``: Alembic revisions, run at start.
- ``events``: live event streams; ``records``: the frozen values handed out;
  ``clock``: injectable time (:class:`FakeClock` for tests).
"""

from genos.orchestrator.capacity import Capacity, HostStatus, QueueEntry, Quota, QuotaPolicy, Usage
from genos.orchestrator.clock import Clock, FakeClock, SystemClock
from genos.orchestrator.engine import Engine
from genos.orchestrator.reconcile import ReconcileReport
from genos.orchestrator.records import (
    ApiToken,
    Environment,
    Event,
    EventType,
    Role,
    Transition,
    User,
)
from genos.orchestrator.registry import Registry
from genos.orchestrator.states import FINAL, TRANSITIONS, State

__all__ = [
    "FINAL",
    "TRANSITIONS",
    "ApiToken",
    "Capacity",
    "Clock",
    "Engine",
    "Environment",
    "Event",
    "EventType",
    "FakeClock",
    "HostStatus",
    "QueueEntry",
    "Quota",
    "QuotaPolicy",
    "ReconcileReport",
    "Registry",
    "Role",
    "State",
    "SystemClock",
    "Transition",
    "Usage",
    "User",
]
