"""The `desktop` image: Chromium opens a page inside a PC, sandboxed like everything else."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from corral.runtime.pcs import PCInfo, PCRuntime

pytestmark = pytest.mark.desktop


@pytest.fixture
def desktop_pc(rt: PCRuntime) -> Iterator[PCInfo]:
    info = rt.boot("desktop", size="medium")
    yield info
    rt.destroy(info.id)


def test_open_url_shows_the_page_in_chromium(rt: PCRuntime, desktop_pc: PCInfo) -> None:
    with rt.client(desktop_pc.id) as client:
        client.write_file(
            "/tmp/page.html", b"<title>Corral browser test</title><h1>Hello from a PC</h1>"
        )
        client.open_url("file:///tmp/page.html")
        deadline = time.monotonic() + 30
        while not any("Corral browser test" in w["title"] for w in client.list_windows()):
            assert time.monotonic() < deadline, client.list_windows()
            time.sleep(0.1)
        browser = [p for p in client.processes() if "chromium" in p["cmd"]]
        assert browser and all(p["user"] == "user" for p in browser)
        network = client.run(
            [
                "python3",
                "-c",
                "import socket; socket.create_connection(('1.1.1.1', 443), timeout=2)",
            ]
        )
        assert network.exit_code != 0  # the browser's PC has no way out either
