"""``rave serve`` against slow and concurrent clients: the figures for the README.

Real sockets on 127.0.0.1, the server's default limits (unless stated), a random network
(the photo itself does not matter here). Prints:

1. how long a client that stalls mid-body holds its connection (default deadline);
2. with 200 clients trickling bodies: the threads alive, how many got a 503 at once, and
   the time a normal client waits for ``/health``;
3. 8 concurrent 50 MB uploads: how many were admitted (two uploads' worth of bytes in
   flight), the server's RSS before and after (uploads stream to disk, not memory).
"""

from __future__ import annotations

import socket
import threading
import time

import torch

from rave.network import EnhancementNet
from rave.server import make_server


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def head(length: int) -> bytes:
    return (
        f"POST /enhance?name=x.jpg HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
    )


def main() -> None:
    torch.manual_seed(0)
    server = make_server(EnhancementNet().eval(), "127.0.0.1", 0, log_line=lambda line: None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = ("127.0.0.1", server.server_port)

    # 1. a stalled body (1 MB declared, 10 bytes sent)
    with socket.create_connection(address) as sock:
        started = time.monotonic()
        sock.sendall(head(2**20) + b"x" * 10)
        sock.settimeout(60)
        while sock.recv(65536):
            pass
        print(f"stalled 1 MB upload: connection closed after {time.monotonic() - started:.1f} s")

    # 2. 200 trickling clients and one normal client
    baseline = threading.active_count()
    slow = []
    refused = 0
    for _ in range(200):
        sock = socket.create_connection(address)
        sock.sendall(head(2**20) + b"x")
        slow.append(sock)
    time.sleep(0.5)
    for sock in slow:
        sock.settimeout(0.05)
        try:
            if sock.recv(100).startswith(b"HTTP/1.1 503"):
                refused += 1
        except (TimeoutError, OSError):
            pass
    threads = threading.active_count() - baseline
    started = time.monotonic()
    with socket.create_connection(address) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = sock.recv(100)
    waited = time.monotonic() - started
    print(
        f"200 trickling clients: {threads} connection threads, {refused} answered 503 at once; "
        f"a normal client: {answer.split(b' ')[1].decode()} in {waited * 1000:.0f} ms"
    )
    for sock in slow:
        sock.close()
    deadline = time.monotonic() + 15
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"  after they closed: {threading.active_count() - baseline} threads left")

    # 3. 8 concurrent 50 MB uploads
    before = rss_mb()
    size = 50 * 2**20
    answers: list[str] = []

    def upload() -> None:
        with socket.create_connection(address) as sock:
            sock.sendall(head(size))
            sock.settimeout(0.3)
            try:
                early = sock.recv(100)  # a 503 comes before any body byte
            except TimeoutError:
                early = b""
            if early:
                answers.append(early.split(b" ")[1].decode())
                return
            sock.settimeout(60)
            try:
                for _ in range(50):
                    sock.sendall(b"\0" * 2**20)
                answers.append(sock.recv(100).split(b" ")[1].decode())
            except OSError as err:
                answers.append(type(err).__name__)

    workers = [threading.Thread(target=upload) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(
        f"8 concurrent 50 MB uploads: answers {sorted(answers)} "
        f"(400 = not a photo, after being received); RSS {before:.0f} -> {rss_mb():.0f} MB"
    )
    server.stop()


if __name__ == "__main__":
    main()
