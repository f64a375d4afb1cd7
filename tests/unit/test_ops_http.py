"""OpsServer: the three paths, readiness, and bad requests answered without taking the listener down."""

from __future__ import annotations

import asyncio

import pytest

from speechstream.ops_http import OpsServer

pytestmark = pytest.mark.timeout(30)


async def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)  # Connection: close: read to EOF
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_paths_readiness_and_bad_requests() -> None:
    state = {"ready": False, "scrapes": 0}

    def render() -> bytes:
        state["scrapes"] += 1
        return f"x_total {state['scrapes']}\n".encode()

    async def main() -> None:
        ops = OpsServer(render, lambda: (bool(state["ready"]), "draining"))
        await ops.start("127.0.0.1", 0)
        try:
            p = ops.port
            assert (await request(p, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 200
            status, _, body = await request(p, b"GET /readyz HTTP/1.1\r\n\r\n")
            assert (status, body) == (503, b"draining\n")
            state["ready"] = True
            assert (await request(p, b"GET /readyz?verbose HTTP/1.1\r\n\r\n"))[:3:2] == (200, b"ready\n")
            status, headers, body = await request(p, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert status == 200 and body == b"x_total 1\n"
            assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert headers["Content-Length"] == str(len(body)) and headers["Connection"] == "close"
            status, headers, body = await request(p, b"HEAD /metrics HTTP/1.1\r\n\r\n")
            assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
            status, headers, _ = await request(p, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            assert status == 405 and headers["Allow"] == "GET, HEAD"
            assert (await request(p, b"GET /other HTTP/1.1\r\n\r\n"))[0] == 404
            assert (await request(p, b"garbage\r\n\r\n"))[0] == 400
            assert (await request(p, b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n"))[0] == 400
            # a client that sends half a request and leaves does not stop the listener
            _, w = await asyncio.open_connection("127.0.0.1", p)
            w.write(b"GET /hea")
            w.close()
            assert (await request(p, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 200
        finally:
            await ops.close()

    asyncio.run(main())


def test_a_failing_collector_is_a_500_and_the_server_goes_on() -> None:
    def render() -> bytes:
        raise RuntimeError("collector broke")

    async def main() -> None:
        ops = OpsServer(render, lambda: (True, ""))
        await ops.start("127.0.0.1", 0)
        try:
            assert (await request(ops.port, b"GET /metrics HTTP/1.1\r\n\r\n"))[0] == 500
            assert (await request(ops.port, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 200
        finally:
            await ops.close()

    asyncio.run(main())
