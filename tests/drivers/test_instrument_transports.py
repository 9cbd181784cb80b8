"""Servers and the driver transport: binary blocks, concurrency, faults, shutdown."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import serial
from instrument_helpers import TRANSPORTS

from physlearn.drivers.link import TransportSettings
from physlearn.drivers.transport import Transport
from physlearn.errors import (
    ConnectionLostError,
    InstrumentConnectionError,
    InstrumentProtocolError,
    InstrumentTimeoutError,
)
from physlearn.simulators.clock import VirtualClock
from physlearn.simulators.instruments.qdac2 import Qdac2Emulator, quantise
from physlearn.simulators.instruments.scpi import (
    CommandContext,
    ScpiInstrument,
    format_block,
    scpi,
)
from physlearn.simulators.instruments.transports import PtyServer, TcpServer

pytestmark = pytest.mark.timeout(30)


class BlockStore(ScpiInstrument):
    """Stores one binary block; answers it with a #9 header, as a Rigol scope does."""

    model = "BLOCKS"

    def reset_state(self) -> None:
        self.data = b""

    @scpi("TRACe:DATA")
    def _set(self, ctx: CommandContext) -> None:
        self.data = ctx.block(0)

    @scpi("TRACe:DATA?")
    def _get(self, ctx: CommandContext) -> bytes:
        return format_block(self.data, 9)


def transport(served: Any, timeout_s: float = 1.0, **kwargs: Any) -> Transport:
    return Transport(
        TransportSettings(
            resource=served.resource,
            backend=served.backend,
            timeout_s=timeout_s,
            reconnect_backoff_s=0.01,
            **kwargs,
        )
    )


PAYLOAD = bytes(range(256)) + b"\n\n\r\n;,#9" + b"\n"


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_binary_block_with_newlines_round_trips_without_desync(serve: Any, kind: str) -> None:
    emulator = BlockStore()
    served = serve(emulator, kind)

    async def go() -> tuple[bytes, str, bytes]:
        link = transport(served)
        try:
            await link.write_block("TRAC:DATA ", PAYLOAD)
            block = await link.query_block("TRAC:DATA?")
            after = await link.query("*IDN?")  # the stream is still in step
            raw = await link.query_raw("*OPC?")
            return block, after, raw
        finally:
            await link.close()

    block, after, raw = asyncio.run(go())
    assert emulator.data == PAYLOAD
    assert block == PAYLOAD
    assert after == "physlearn,BLOCKS,00000,0"
    assert raw == b"1"


def test_bad_block_header_is_a_protocol_error(serve: Any) -> None:
    emulator = Qdac2Emulator(VirtualClock())
    served = serve(emulator, "memory")

    async def go() -> str:
        link = transport(served)
        with pytest.raises(InstrumentProtocolError, match="expected a binary block"):
            await link.query_block("*IDN?")
        return await link.query("*IDN?")  # reopened: in step again

    assert asyncio.run(go()).startswith("QDevil")


def test_same_bytes_from_raw_socket_and_raw_pty(serve: Any) -> None:
    """Third-party clients (plain socket, plain pyserial) see identical bytes."""
    commands = b"*IDN?\nsour1:volt 0.3;volt?\nfoo\nsyst:err?\nsour:volt? (@1:3)\n"
    replies = {}
    for kind in ("tcp", "pty-serial"):
        served = serve(Qdac2Emulator(VirtualClock()), kind)
        expected_lines = 4
        if kind == "tcp":
            with socket.create_connection(("127.0.0.1", served.server.port), timeout=2) as s:
                s.sendall(commands)
                data = b""
                while data.count(b"\n") < expected_lines:
                    data += s.recv(4096)
        else:
            with serial.Serial(served.server.path, 115200, timeout=2) as port:
                port.write(commands)
                data = b"".join(port.readline() for _ in range(expected_lines))
        replies[kind] = data
    v = f"{quantise(0.3, 'HIGH'):.9g}".encode()
    assert (
        replies["tcp"]
        == replies["pty-serial"]
        == (
            b"QDevil, QDAC-II, 00042, 13-1.57\n"
            + v
            + b'\n-113, "Undefined header"\n'
            + v
            + b",0,0\n"
        )
    )


def test_several_clients_and_instruments_concurrently(serve: Any) -> None:
    shared = Qdac2Emulator(VirtualClock())
    other = Qdac2Emulator(VirtualClock(), serial="777")
    tcp = serve(shared, "tcp")
    pty = serve(other, "pty-visa")

    async def client(served: Any, channel: int) -> list[str]:
        link = transport(served)
        out = []
        try:
            for i in range(20):
                await link.write(f"sour{channel}:volt {i / 100}")
                out.append(await link.query(f"sour{channel}:volt?"))
        finally:
            await link.close()
        return out

    async def go() -> tuple[list[str], list[str], list[str]]:
        return await asyncio.gather(client(tcp, 1), client(tcp, 2), client(pty, 3))

    a, b, c = asyncio.run(go())
    assert a == b == c
    assert len(a) == 20 and a[0] == "0"


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "tcp", "pty-serial"])
def test_dropped_connection_reconnects(serve: Any, kind: str) -> None:
    emulator = Qdac2Emulator(VirtualClock())
    served = serve(emulator, kind)

    async def go() -> tuple[list[str], int]:
        link = transport(served, timeout_s=0.5)
        await link.open()
        emulator.faults.drop_connection_after(2)
        out = [await link.query(f"sour1:volt {i / 10};volt?") for i in range(5)]
        await link.close()
        return out, link.reconnects

    out, reconnects = asyncio.run(go())
    assert out == [f"{quantise(i / 10, 'HIGH'):.9g}" for i in range(5)]
    if kind != "pty-serial":  # a serial line has no connection to lose
        assert reconnects == 1


def test_dropped_connection_before_processing_is_retried_once(serve: Any) -> None:
    emulator = Qdac2Emulator(VirtualClock())
    served = serve(emulator, "tcp")

    async def go() -> str:
        link = transport(served, timeout_s=0.5)
        await link.open()
        emulator.faults.drop_connection_after(0)  # the next message is lost with the link
        try:
            return await link.query("*IDN?")
        finally:
            await link.close()

    assert asyncio.run(go()).startswith("QDevil")
    assert list(emulator.received) == [b"*IDN?"]


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_no_reply_times_out_within_the_timeout(serve: Any, kind: str) -> None:
    emulator = Qdac2Emulator(VirtualClock())
    served = serve(emulator, kind)
    timeout_s = 0.3

    async def go() -> tuple[float, str]:
        link = transport(served, timeout_s=timeout_s)
        await link.open()
        emulator.faults.suppress_replies(1)
        start = time.monotonic()
        with pytest.raises(InstrumentTimeoutError, match=r"no reply within 0\.3 s"):
            await link.query("*IDN?")
        elapsed = time.monotonic() - start
        after = await link.query("sour1:volt?")
        await link.close()
        return elapsed, after

    elapsed, after = asyncio.run(go())
    assert elapsed < timeout_s + 1.0
    assert after == "0"


@pytest.mark.parametrize("kind", ["memory", "tcp"])
def test_late_reply_is_discarded_not_read_as_the_next_answer(serve: Any, kind: str) -> None:
    emulator = Qdac2Emulator(VirtualClock())
    served = serve(emulator, kind)

    async def go() -> str:
        link = transport(served, timeout_s=0.2)
        await link.open()
        emulator.faults.delay_replies(0.5, count=1)
        with pytest.raises(InstrumentTimeoutError):
            await link.query("*IDN?")
        answer = await link.query("sour1:rang?")
        await link.close()
        return answer

    assert asyncio.run(go()) == "high"


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_short_delay_is_tolerated(serve: Any, kind: str) -> None:
    emulator = Qdac2Emulator(VirtualClock())
    served = serve(emulator, kind)

    async def go() -> str:
        link = transport(served, timeout_s=1.0)
        emulator.faults.delay_replies(0.05, count=None)
        try:
            return await link.query("sour1:filt?")
        finally:
            await link.close()

    assert asyncio.run(go()) == "high"


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_garbled_and_truncated_replies_are_clear_errors(serve: Any, kind: str) -> None:
    emulator = Qdac2Emulator(VirtualClock())
    served = serve(emulator, kind)

    async def go() -> str:
        link = transport(served, timeout_s=0.3)
        await link.open()
        emulator.faults.garble_replies(1)
        with pytest.raises(InstrumentProtocolError, match="garbled reply"):
            await link.query("*IDN?")
        emulator.faults.truncate_replies(1)
        # pyvisa-py returns a cut reply as is (socket) or times out (serial): both are clear.
        with pytest.raises((InstrumentProtocolError, InstrumentTimeoutError)):
            await link.query("*IDN?")
        answer = await link.query("*IDN?")
        await link.close()
        return answer

    assert asyncio.run(go()).startswith("QDevil, QDAC-II")


def test_unknown_resources_and_closed_ports_fail_clearly() -> None:
    async def go(resource: str, backend: str = "pyvisa") -> None:
        link = Transport(TransportSettings(resource=resource, backend=backend, timeout_s=0.5))
        await link.query("*IDN?")

    with pytest.raises(InstrumentConnectionError, match="no in-memory instrument"):
        asyncio.run(go("MEM::nobody::INSTR"))
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InstrumentConnectionError, match=f"127.0.0.1::{port}"):
        asyncio.run(go(f"TCPIP0::127.0.0.1::{port}::SOCKET"))
    with pytest.raises(InstrumentConnectionError, match="/dev/pts/nonexistent"):
        asyncio.run(go("ASRL/dev/pts/nonexistent::INSTR", "pyserial"))
    with pytest.raises(InstrumentConnectionError, match="needs an ASRL"):
        asyncio.run(go("TCPIP0::127.0.0.1::1::SOCKET", "pyserial"))


def test_vanishing_pty_gives_connection_lost(serve: Any) -> None:
    emulator = Qdac2Emulator(VirtualClock())
    served = serve(emulator, "pty-serial")

    async def go() -> None:
        link = transport(served, timeout_s=0.3, reconnect_attempts=2)
        assert (await link.query("*IDN?")).startswith("QDevil")
        served.server.vanish()
        with pytest.raises(ConnectionLostError):
            await link.query("*IDN?")
        await link.close()

    asyncio.run(go())


@pytest.mark.timeout(10)
def test_servers_stop_promptly_with_clients_connected_and_replies_pending() -> None:
    emulator = Qdac2Emulator(VirtualClock())
    tcp = TcpServer(emulator)
    pty = PtyServer(emulator)
    tcp.start()
    pty.start()
    try:
        client = socket.create_connection(("127.0.0.1", tcp.port))
        port = serial.Serial(pty.path, 115200, timeout=0.1)
        emulator.faults.delay_replies(30.0, count=None)
        client.sendall(b"*IDN?\n")
        port.write(b"*IDN?\n")
        time.sleep(0.1)
    finally:
        start = time.monotonic()
        tcp.stop()
        pty.stop()
        stopped_in = time.monotonic() - start
    client.close()
    port.close()
    assert stopped_in < 3.0
    tcp.stop()  # idempotent


def test_tcp_links_disable_nagle(serve: Any) -> None:
    # a command followed by a query (every write and its SYST:ERR? check) must not wait for
    # the instrument's delayed ACK: the link's socket has TCP_NODELAY, as NI-VISA sets it
    emulator = Qdac2Emulator(VirtualClock())
    served = serve(emulator, "tcp")

    async def go() -> int:
        link = transport(served)
        try:
            await link.write("sour1:filt high")
            assert await link.query("sour1:filt?") == "high"
            sock = link._link._socket()  # type: ignore[union-attr]
            assert sock is not None
            return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        finally:
            await link.close()

    assert asyncio.run(go()) != 0


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_an_emulator_bug_is_logged_and_the_server_goes_on(
    serve: Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception inside an emulator (a bug, not an instrument error) costs one reply: it is
    logged with its traceback, and the server thread keeps answering the next messages."""
    emulator = Qdac2Emulator(VirtualClock())
    original = emulator.process
    calls = {"n": 0}

    def flaky(message: bytes) -> bytes:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("emulator bug")
        return original(message)

    emulator.process = flaky  # type: ignore[method-assign]
    served = serve(emulator, kind)

    async def go() -> str:
        link = transport(served, timeout_s=0.3)
        await link.open()
        try:
            with pytest.raises(InstrumentTimeoutError):
                await link.query("*IDN?")
            return await link.query("*IDN?")
        finally:
            await link.close()

    assert asyncio.run(go()).startswith("QDevil")
    assert any("the emulator failed" in r.message and r.exc_info for r in caplog.records)
