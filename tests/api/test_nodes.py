"""``/v1/nodes`` and ``/v1/cluster`` on one host (in-process, fake runtime)."""

from __future__ import annotations

import httpx
import pytest

from genos.spec import EnvironmentSpec, ResourceRequest, Resources, dump
from tests.api.conftest import AsUser

pytestmark = pytest.mark.anyio


async def test_one_host_is_its_only_node_and_has_nothing_to_cordon(
    api: httpx.AsyncClient, as_user: AsUser
) -> None:
    """The list is this host with its capacity and what a running environment requests;
    cordoning it is a 409 (there is no cluster), and users may not look."""
    spec = dump(
        EnvironmentSpec(
            name="n", resources=Resources(request=ResourceRequest(cpus=0.5, memory_mb=300))
        )
    )
    made = await api.post("/v1/environments", json={"spec": spec})
    assert made.status_code == 201, made.text
    nodes = (await api.get("/v1/nodes")).json()
    assert len(nodes) == 1
    (node,) = nodes
    assert node["state"] == "ready"
    assert node["cordon"] is None
    assert node["requested"] == {"environments": 1, "cpus": 0.5, "memory_mb": 300}
    assert node["capacity"]["cpus"] > 0
    refused = await api.post(f"/v1/nodes/{node['name']}/cordon", json={"reason": "x"})
    assert refused.status_code == 409
    assert "one host" in refused.json()["error"]["message"]
    bob = await as_user("bob")
    assert (await bob.get("/v1/nodes")).status_code == 403
    assert (await bob.get("/v1/cluster")).status_code == 403


async def test_one_host_control_plane_leads_itself(api: httpx.AsyncClient) -> None:
    """``/v1/cluster`` says this process runs everything."""
    view = (await api.get("/v1/cluster")).json()
    assert view == {"mode": "single", "replica": None, "leader": None, "leading": True,
                    "etcd_silent_s": None, "nodes": 1}  # fmt: skip
