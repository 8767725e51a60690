"""What the SIP front (Kamailio) costs: start-up time, memory, and the time it adds to SIP.

Starts the front with one stand-in worker (a few lines of Python on a UDP port that answer
INVITE with 486 and OPTIONS with 200 at once) and prints:
  - start-up: open_front until the front answers its first OPTIONS
  - memory: Kamailio's processes together (proportional set size)
  - OPTIONS answered by the front itself: round trip p50/p95
  - INVITE to the worker and its final answer back: round trip through the front vs straight
    to the worker (the difference is what the front adds to call set-up: dispatch, relay and
    the failure route a busy worker's answer takes)
  - OPTIONS per second the front answers to several senders at once
Everything runs on 127.0.0.1; the front's rate limit is lifted for loopback.

Usage: python bench/sip_front.py [--count N] [--senders N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import socket
import tempfile
import time
from pathlib import Path

from voicebot.sip.front import FrontOptions, WorkerAddress, open_front, options_request
from voicebot.sip.settings import SipSecuritySettings, SipSettings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BusyWorker(asyncio.DatagramProtocol):
    """Answers INVITE 486, OPTIONS 200; ACKs and answers are ignored."""

    def connection_made(self, transport: asyncio.DatagramTransport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode(errors="replace")
        method = text.split(" ", 1)[0]
        if method not in ("INVITE", "OPTIONS"):
            return
        code = "486 Busy Here" if method == "INVITE" else "200 OK"
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
        keep = [h for h in head if re.match(r"(?i)(via|from|to|call-id|cseq|record-route):", h)]
        keep = [h + ";tag=w1" if h.lower().startswith("to:") and "tag=" not in h else h for h in keep]
        self.transport.sendto(("\r\n".join([f"SIP/2.0 {code}", *keep, "Content-Length: 0", "", ""])).encode(), addr)


def invite(port: int, local: tuple[str, int]) -> bytes:
    ip, lport = local
    lines = [f"INVITE sip:voicebot@127.0.0.1:{port} SIP/2.0",
             f"Via: SIP/2.0/UDP {ip}:{lport};branch=z9hG4bK{secrets.token_hex(8)};rport", "Max-Forwards: 70",
             f"From: <sip:bench@{ip}>;tag={secrets.token_hex(4)}", f"To: <sip:voicebot@127.0.0.1:{port}>",
             f"Call-ID: {secrets.token_hex(8)}", "CSeq: 1 INVITE", f"Contact: <sip:bench@{ip}:{lport}>",
             "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def ack_for(answer: bytes, local: tuple[str, int]) -> bytes:
    """The ACK for a negative final answer (same branch, hop by hop)."""
    text = answer.decode(errors="replace")
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    fields = {h.split(":", 1)[0].lower(): h for h in head[1:]}
    to_uri = re.search(r"<([^>]+)>", fields["to"]).group(1)
    cseq = fields["cseq"].split(":", 1)[1].split()[0]
    lines = [f"ACK {to_uri} SIP/2.0", fields["via"], "Max-Forwards: 70", fields["from"], fields["to"],
             fields["call-id"], f"CSeq: {cseq} ACK", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


async def round_trips(port: int, count: int, make: str) -> list[float]:
    """Milliseconds from sending a request to its final answer, one request at a time."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    local = sock.getsockname()
    times = []
    try:
        for _ in range(count):
            data = invite(port, local) if make == "INVITE" else options_request("127.0.0.1", port, local=local)[0]
            start = time.perf_counter()
            await loop.sock_sendto(sock, data, ("127.0.0.1", port))
            while True:
                answer, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), 5)
                if int(answer[8:11]) >= 200:
                    break
            times.append((time.perf_counter() - start) * 1000)
            if make == "INVITE":
                await loop.sock_sendto(sock, ack_for(answer, local), ("127.0.0.1", port))
    finally:
        sock.close()
    return times


async def throughput(port: int, senders: int, seconds: float) -> float:
    """OPTIONS answered per second with ``senders`` sockets each keeping one request in flight."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def sender() -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        done = 0
        try:
            while loop.time() < deadline:
                await loop.sock_sendto(sock, options_request("127.0.0.1", port, local=sock.getsockname())[0],
                                       ("127.0.0.1", port))
                await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), 5)
                done += 1
        finally:
            sock.close()
        return done

    start = loop.time()
    total = sum(await asyncio.gather(*(sender() for _ in range(senders))))
    return total / (loop.time() - start)


def memory_mb(pid: int) -> float:
    """Memory of a process and its children, MB: proportional set size, so the shared memory
    Kamailio's processes have in common counts once."""
    pids = [pid] + [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == pid]
    total_kb = 0
    for p in pids:
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        m = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
        total_kb += int(m.group(1)) if m else 0
    return total_kb / 1024


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=500, help="requests per round-trip figure")
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    loop = asyncio.get_running_loop()
    worker_port = free_port()
    transport, _ = await loop.create_datagram_endpoint(BusyWorker, local_addr=("127.0.0.1", worker_port))
    settings = SipSettings(host="127.0.0.1", port=free_port(), tcp=False,
                           security=SipSecuritySettings(rate_limit_exempt=("127.0.0.0/8",)))
    options = FrontOptions()
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            start = time.perf_counter()
            async with open_front(settings, [WorkerAddress(worker_port)], Path(run_dir), options=options) as front:
                started_s = time.perf_counter() - start
                await round_trips(front.port, 20, "OPTIONS")  # warm up
                memory = await loop.run_in_executor(None, memory_mb, front.pid)
                own = await round_trips(front.port, args.count, "OPTIONS")
                via = await round_trips(front.port, args.count, "INVITE")
                direct = await round_trips(worker_port, args.count, "INVITE")
                rate = await throughput(front.port, args.senders, args.seconds)
    finally:
        transport.close()
    print(f"SIP front (Kamailio, {options.children} UDP processes), {os.cpu_count()} CPUs")
    print(f"  start-up until it answers OPTIONS: {started_s * 1000:.0f} ms")
    print(f"  memory, all its processes (PSS): {memory:.0f} MB")
    for name, times in (("OPTIONS answered by the front", own), ("INVITE -> 486, through the front", via),
                        ("INVITE -> 486, straight to the worker", direct)):
        print(f"  {name:38s} p50 {percentile(times, 0.5):6.3f} ms  p95 {percentile(times, 0.95):6.3f} ms"
              f"  ({len(times)} requests)")
    added = percentile(via, 0.5) - percentile(direct, 0.5)
    print(f"  the front adds to call set-up: {added:.3f} ms (p50)")
    print(f"  OPTIONS answered per second, {args.senders} senders: {rate:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
