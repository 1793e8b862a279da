"""Attacks on the real exporter process, each while a legitimate scraper keeps scraping.

The exporter runs with basic auth (bcrypt) in front of a replayed real vLLM. The attacker
connects from 127.0.0.2 (Linux routes all of 127/8 to loopback), the scraper from 127.0.0.1, as
two machines would. Each attack must leave the scraper at least 95% of its scrapes answered
within 1 s, and raise the exporter's resident memory by no more than 64 MiB.
"""

from __future__ import annotations

import base64
import random
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml

from exporter.export.server import MAX_CONNECTIONS
from tests.harness import Exporter, RecordedVllm
from tests.paths import FIX

pytestmark = pytest.mark.e2e
USER, PASSWORD = "prometheus", "correct horse battery staple"
ATTACKER = "127.0.0.2"
MIB = 1024 * 1024


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class AuthExporter(Exporter):
    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"exporter exited {self.proc.returncode}")
        r = requests.get(self.url + "/-/ready", auth=(USER, PASSWORD), timeout=5)
        return r.status_code == 200


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthExporter]:
    d = tmp_path_factory.mktemp("web")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    other = bcrypt.hashpw(b"fresh password", bcrypt.gensalt(rounds=10)).decode()
    web = d / "web.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {USER: hashed, "fresh": other}}))
    vllm = RecordedVllm(FIX / "vllm" / "vllm032-cpu-c-saturation.jsonl.gz")
    vllm.start()
    exp = AuthExporter(
        "--vllm-url", vllm.url, "--gpu-replay", str(FIX / "nvml" / "h200-probe.jsonl.gz"),
        "--max-num-seqs", "4", "--web.config.file", str(web),
    )  # fmt: skip
    try:
        yield exp
    finally:
        out = exp.stop()
        vllm.stop()
        # However hard it was attacked, the log stayed short (refusals are rate-limited).
        assert len(out.splitlines()) < 200, out[-3000:]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, clock ticks


class Scraper:
    """A legitimate scraper: a GET of /metrics every 100 ms with its verified credential.
    ``fresh`` opens a new connection for every scrape instead of keeping one alive."""

    def __init__(self, url: str, fresh: bool = False, auth: tuple[str, str] = (USER, PASSWORD)):
        self.url, self.fresh, self.auth = url, fresh, auth
        self.results: list[tuple[bool, float]] = []  # (answered 200, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                if self.fresh:
                    r = requests.get(self.url, auth=self.auth, timeout=5)
                else:
                    r = session.get(self.url, auth=self.auth, timeout=5)
                ok = r.status_code == 200 and b"vllm_profile_up" in r.content
            except requests.RequestException:
                ok = False
            self.results.append((ok, time.monotonic() - t0))
            self._stop.wait(0.1)
        session.close()

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def good_share(self) -> float:
        assert len(self.results) >= 10, self.results
        return sum(1 for ok, took in self.results if ok and took < 1.0) / len(self.results)


@contextmanager
def attack_window(exp: Exporter, **scraper: object) -> Iterator[Scraper]:
    """Runs a scraper across the block; checks the 95% / 1 s and the +64 MiB promises."""
    before = rss(exp.proc.pid)
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss(exp.proc.pid))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with Scraper(exp.url + "/metrics", **scraper) as s:  # type: ignore[arg-type]
        yield s
    done.set()
    watcher.join(5)
    share = s.good_share()
    assert share >= 0.95, (share, s.results[:50])
    assert peak[0] - before < 64 * MIB, (peak[0] - before) / MIB


def attacker_socket(port: int, source: str = ATTACKER) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def run_for(seconds: float, step: Callable[[], None]) -> int:
    """Call ``step`` over and over for ``seconds``; how many times it ran."""
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        step()
        n += 1
    return n


def test_streaming_into_a_connection_while_its_credential_is_checked(
    exporter: AuthExporter,
) -> None:
    # The attacker queues credential checks on several connections, then floods the last one
    # with data while its check waits: garbage, and then a request announcing a huge body.
    junk = b"A" * 65536
    with attack_window(exporter):
        for extra in ("", "Content-Length: 10000000000\r\n"):
            queued = []
            for i in range(10):
                s = attacker_socket(exporter.port)
                auth = basic(USER, f"guess-{i}-{random.random()}")
                s.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                          f"{extra}\r\n".encode())  # fmt: skip
                queued.append(s)
            s = queued[-1]
            s.setblocking(False)
            sent = [0]

            def push(sock: socket.socket = s, sent: list[int] = sent) -> None:
                try:
                    sent[0] += sock.send(junk)
                except BlockingIOError:
                    time.sleep(0.001)  # the exporter stopped reading: what the test expects
                except OSError:
                    time.sleep(0.01)  # or it closed the connection

            run_for(4.0, push)
            for q in queued:
                q.close()
            assert sent[0] < 256 * MIB  # it stopped reading long before gigabytes


def test_a_flood_of_wrong_passwords(exporter: AuthExporter) -> None:
    cpu0 = cpu_seconds(exporter.proc.pid)
    sockets: list[socket.socket] = []
    # A scraper with a credential not checked before, from its own address, in the flood.
    with attack_window(exporter, auth=("fresh", "fresh password")):

        def guess() -> None:
            s = attacker_socket(exporter.port)
            auth = basic(USER, f"wrong-{random.random()}")
            s.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
            sockets.append(s)
            if len(sockets) > 20:  # keep some waiting, drop the oldest as a flood does
                sockets.pop(0).close()
            time.sleep(0.005)

        n = run_for(5.0, guess)
        assert n > 200  # hundreds of wrong passwords, most answered 429 at once
    for s in sockets:
        s.close()
    # Nothing queued for connections already gone: the exporter goes quiet at once.
    cpu1 = cpu_seconds(exporter.proc.pid)
    time.sleep(2.5)  # a measurement interval: the CPU the exporter spends in it
    assert cpu_seconds(exporter.proc.pid) - cpu1 < 1.0, (cpu1 - cpu0, "CPU after the flood")


def median_401(port: int, auth: str, source: str) -> float:
    times = []
    for _ in range(4):  # within one client's burst of credential checks
        s = attacker_socket(port, source)
        t0 = time.monotonic()
        s.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
        answer = s.recv(4096)
        times.append(time.monotonic() - t0)
        s.close()
        assert answer.startswith(b"HTTP/1.1 401"), answer[:60]
    return statistics.median(times)


def test_a_401_does_not_tell_which_users_exist(exporter: AuthExporter) -> None:
    known = median_401(exporter.port, basic(USER, "not the password"), "127.0.0.3")
    unknown = median_401(exporter.port, basic("nobody-here", "whatever"), "127.0.0.4")
    # Both cost one bcrypt; without the dummy hash an unknown user was answered 250x faster.
    assert unknown > 0.3 * known, (unknown, known)


def test_idle_connections_and_slowloris_do_not_lock_scrapers_out(exporter: AuthExporter) -> None:
    held: list[socket.socket] = []
    with attack_window(exporter, fresh=True):
        for i in range(600):  # kept-alive connections, parked idle after one request each
            s = attacker_socket(exporter.port)
            if i % 2:
                s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            else:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            held.append(s)

        # ...and keep trickling into the unfinished heads for a while.
        def trickle() -> None:
            for s in held[::2]:
                try:
                    s.send(b"a")
                except OSError:
                    pass
            time.sleep(0.2)

        run_for(3.0, trickle)
    for s in held:
        s.close()


def test_pipelined_requests_on_one_connection_do_not_starve_others(
    exporter: AuthExporter,
) -> None:
    auth = basic(USER, PASSWORD)
    with attack_window(exporter):
        s = attacker_socket(exporter.port, "127.0.0.1")  # the scraper's own, verified client
        s.setblocking(False)
        batch = b"".join(
            f"GET /metrics?x={i}&name[]=vllm_profile_up&name[]=n{random.random()} HTTP/1.1\r\n"
            f"Host: x\r\nAuthorization: {auth}\r\n\r\n".encode()
            for i in range(200)
        )

        def pipeline() -> None:
            try:
                s.send(batch)
            except BlockingIOError:
                pass
            try:
                while s.recv(1 << 20):  # read answers slowly: whatever is there, then pause
                    pass
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                time.sleep(0.01)

        run_for(4.0, pipeline)
        s.close()


def test_answers_never_carry_a_traceback_or_what_was_asked(exporter: AuthExporter) -> None:
    auth = (USER, PASSWORD)
    for accept in ("application/openmetrics-text; version=x.y", "x" * 4000, ";;;q=,"):
        r = requests.get(exporter.url + "/metrics", headers={"Accept": accept}, auth=auth,
                         timeout=5)  # fmt: skip
        assert r.status_code == 200 and "x.y" not in r.headers["Content-Type"]
    r = requests.get(exporter.url + "/metrics", headers={"Accept-Encoding": "gzip;q=0"},
                     auth=auth, timeout=5, stream=True)  # fmt: skip
    assert "Content-Encoding" not in r.headers
    r.close()


# --- the attacker shares the scraper's address (NAT, a node's IP, a load balancer) -------------

SHARED = "127.0.0.1"  # the scraper's own address


@pytest.mark.parametrize("fresh", [False, True], ids=["kept-alive", "fresh"])
def test_parked_connections_from_the_scrapers_own_address(
    exporter: AuthExporter, fresh: bool
) -> None:
    """Hundreds of connections from the scraper's address, parked before or after a request
    without credentials: they never earn trust, so they give way to the scraper's connections
    (kept alive, or a new one each scrape)."""
    held: list[socket.socket] = []
    with attack_window(exporter, fresh=fresh):

        def park() -> None:
            s = attacker_socket(exporter.port, SHARED)
            if len(held) % 2:
                s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")  # 401: untrusted
            held.append(s)
            if len(held) > 400:
                held.pop(0).close()
            time.sleep(0.002)

        run_for(4.0, park)
    for s in held:
        s.close()


def test_a_password_flood_from_the_scrapers_own_address(exporter: AuthExporter) -> None:
    """Wrong passwords from the scraper's address, each connection held open while its check
    waits: waiting connections give way, and the scraper's verified credential costs no check."""
    sockets: list[socket.socket] = []
    with attack_window(exporter, fresh=True):

        def guess() -> None:
            s = attacker_socket(exporter.port, SHARED)
            auth = basic(USER, f"wrong-{random.random()}")
            s.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
            sockets.append(s)
            if len(sockets) > 200:
                sockets.pop(0).close()
            time.sleep(0.004)

        run_for(5.0, guess)
    for s in sockets:
        s.close()


def test_wrong_passwords_from_many_addresses_held_open(exporter: AuthExporter) -> None:
    """24 addresses, each sending a wrong password 2.5 times a second on a new connection it
    keeps open: more than the one checking thread can verify, so checks queue and connections
    pile up. Those waiting give way to newcomers, and none waits over 10 s."""
    sources = [f"127.0.1.{i}" for i in range(1, 25)]
    sockets: list[socket.socket] = []
    with attack_window(exporter, fresh=True):
        sent = [0]

        def round_of_guesses() -> None:
            for source in sources:
                s = attacker_socket(exporter.port, source)
                auth = basic(USER, f"wrong-{random.random()}")
                s.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
                          .encode())  # fmt: skip
                sockets.append(s)
                sent[0] += 1
            time.sleep(0.4)  # 2.5 a second from each address

        run_for(20.0, round_of_guesses)  # far more waiting checks than the 512 connections held
        assert sent[0] > MAX_CONNECTIONS
    for s in sockets:
        s.close()
