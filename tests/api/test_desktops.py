"""The agent connections of a process: one per environment, and none kept for a display
that went away."""

from __future__ import annotations

from pathlib import Path

from genos.api.desktops import Desktops
from genos.gateway.fake import FakeDisplay
from tests.gateway.helpers import async_wait_until, run

GONE, STAYS, NEW = "0000000001", "0000000002", "0000000003"


def test_a_connection_whose_display_went_away_is_closed_when_another_opens(
    tmp_path: Path,
) -> None:
    """When an environment's display closes (it ended elsewhere, and no call came for it),
    the next call that opens a connection closes and forgets that one, and only it; a call
    on a live connection only looks it up."""

    async def main() -> None:
        leaving, staying = FakeDisplay(32, 16), FakeDisplay(32, 16)
        first, second = tmp_path / "leaving.sock", tmp_path / "staying.sock"
        servers = [await leaving.serve_unix(first), await staying.serve_unix(second)]
        desktops = Desktops()
        try:
            gone = await desktops.get(GONE, first)
            stays = await desktops.get(STAYS, second)
            assert await desktops.get(GONE, first) is gone  # one connection each
            servers[0].close()
            for stream in list(leaving.clients):
                await stream.close()
            await async_wait_until(lambda: not gone.alive, what="the connection sees the close")
            assert GONE in desktops
            assert await desktops.get(STAYS, second) is stays
            assert GONE in desktops  # a live one's call did not look at the others
            await desktops.get(NEW, second)
            assert (GONE in desktops, STAYS in desktops) == (False, True)
            assert await desktops.sweep() == []
        finally:
            await desktops.aclose()
            for server in servers:
                server.close()

    run(main())
