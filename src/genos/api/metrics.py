"""``/metrics`` in the Prometheus text format, ``/healthz``, ``/readyz`` and ``/v1/host``."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from genos.api import schemas, views
from genos.api.deps import CallerDep, ServiceDep
from genos.api.routes_envs import accelerator
from genos.api.service import Service
from genos.gateway.metrics import REGISTRY, ConnectionStats
from genos.orchestrator.capacity import HostStatus
from genos.orchestrator.states import State

router = APIRouter()


@router.get("/healthz", response_model=schemas.Status)
async def healthz() -> JSONResponse:
    """The process is alive."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz", response_model=schemas.Status, responses={503: {"model": schemas.ErrorBody}})
async def readyz(svc: ServiceDep) -> JSONResponse:
    """Ready once the first reconcile is done (until then, 503)."""
    if not svc.ready:
        return JSONResponse(
            {"error": {"code": "not_ready", "message": "starting"}}, status_code=503
        )
    return JSONResponse({"status": "ready"})


@router.get("/v1/host")
async def host(svc: ServiceDep, _who: CallerDep) -> JSONResponse:
    """Capacity, what environments hold, the queue, and how VMs are accelerated."""
    status = await svc.engine.host()
    runtimes = [str(r) for r in getattr(svc.engine.driver, "runtimes", [svc.engine.driver.name])]
    return JSONResponse(views.host(status, accelerator=accelerator(svc), runtimes=runtimes))


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(svc: ServiceDep, _who: CallerDep) -> PlainTextResponse:
    """Prometheus metrics: environments by state, capacity, per-env cgroup use, streams."""
    return PlainTextResponse(await render(svc), media_type="text/plain; version=0.0.4")


def _line(name: str, value: float, **labels: Any) -> str:
    if labels:
        inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {value:g}"
    return f"{name} {value:g}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


async def render(svc: Service) -> str:
    """The whole metrics page."""
    out: list[str] = []
    envs = await svc.engine.list()
    by_state = Counter(e.state for e in envs)
    _family(out, "genos_environments", "gauge", "Environments by state.")
    out += [_line("genos_environments", by_state.get(s, 0), state=s.value) for s in State]
    status = await svc.engine.host()
    _host(out, status)
    _usage(svc, out, [e.id for e in envs if e.state in {State.RUNNING, State.SUSPENDED}])
    _streams(out)
    _family(out, "genos_uptime_seconds", "gauge", "Seconds since this server started.")
    out.append(_line("genos_uptime_seconds", round(time.time() - svc.started, 3)))
    return "\n".join(out) + "\n"


def _host(out: list[str], status: HostStatus) -> None:
    """Capacity, requests, limits and real use side by side (CPUs and bytes)."""
    cap, mb = status.capacity, 1 << 20
    measured = status.measured
    figures = (
        ("capacity_cpus", "CPUs the host gives environments (before overcommit).", cap.cpus),
        ("capacity_memory_bytes", "Memory the host gives environments.", cap.memory_mb * mb),
        ("allocatable_cpus", "CPUs requests may add up to (with overcommit).",
         cap.allocatable_cpus),
        ("allocatable_memory_bytes", "Memory requests may add up to.",
         cap.allocatable_memory_mb * mb),
        ("requested_cpus", "CPUs the environments here request (reserved).", status.used.cpus),
        ("requested_memory_bytes", "Memory the environments here request (reserved).",
         status.used.memory_mb * mb),
        ("limit_cpus", "CPU limits of the environments here, added up.", status.limits.cpus),
        ("limit_memory_bytes", "Memory limits of the environments here, added up.",
         status.limits.memory_mb * mb),
        ("used_cpus", "Cores the environments here keep busy now.",
         measured.cpus if measured else 0.0),
        ("used_memory_bytes", "Working-set memory of the environments here now.",
         measured.memory_mb * mb if measured else 0),
        ("memory_pressure", "1 while the host is short of memory.",
         int(status.pressure is not None)),
        ("queue_length", "Requests waiting for capacity.", len(status.queue)),
    )  # fmt: skip
    for name, text, value in figures:
        metric = name if name == "queue_length" else f"host_{name}"
        _family(out, f"genos_{metric}", "gauge", text)
        out.append(_line(f"genos_{metric}", value))


def _usage(svc: Service, out: list[str], env_ids: list[str]) -> None:
    usages = [svc.engine.driver.usage(e) for e in env_ids]
    families = (
        (
            "genos_env_cpu_seconds_total",
            "counter",
            "CPU time used by the environment's cgroup.",
            "cpu_seconds",
        ),
        (
            "genos_env_memory_bytes",
            "gauge",
            "Memory used by the environment's cgroup.",
            "memory_bytes",
        ),
        ("genos_env_pids", "gauge", "Processes in the environment's cgroup.", "pids"),
    )
    for name, kind, text, attr in families:
        _family(out, name, kind, text)
        out += [
            _line(name, getattr(u, attr), env=e) for e, u in zip(env_ids, usages, strict=True) if u
        ]


def _streams(out: list[str]) -> None:
    stats = REGISTRY.snapshot()
    _family(out, "genos_stream_connections", "gauge", "Live viewer connections.")
    out.append(_line("genos_stream_connections", len(stats)))
    figures: tuple[tuple[str, str, Callable[[ConnectionStats], float | None]], ...] = (
        ("genos_stream_rtt_ms", "Round-trip time to the viewer.", lambda s: s.link.rtt_ms),
        ("genos_stream_fps", "Frames per second sent to the viewer.", lambda s: s.link.fps),
        ("genos_stream_kbps", "Kilobits per second sent to the viewer.", lambda s: s.link.kbps),
        (
            "genos_stream_quality",
            "JPEG quality the environment encodes with.",
            lambda s: s.link.quality,
        ),
    )
    for name, text, read in figures:
        _family(out, name, "gauge", text)
        for s in stats:
            value = read(s)
            if value is not None:
                out.append(_line(name, value, env=s.env_id, connection=s.connection_id))
