"""A small load generator for the OpenAI completions API, measuring on the client side.

Controlled prompt and output lengths, a fixed number of concurrent clients, bounded in time;
traffic to 127.0.0.1 only. Responses are streamed so every token's arrival time is known:
client-side tokens/s, requests/s and time to first token over any interval.

It runs as its own process at a real-time priority (:class:`LoadProcess`): vLLM's engine
busy-waits on every core, and a normal-priority client measured 217 ms to first token where vLLM
measured 6 ms (9 ms at real-time priority).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from exporter.signals import route
from tests.realvllm.make_tiny_model import WORDS
from tests.realvllm.server import SERVED_NAME, realtime


@dataclass
class RequestLog:
    start: float
    first_token: float | None = None
    end: float | None = None
    token_times: list[float] = field(default_factory=list)
    ok: bool = False


class ClientSideTruth:
    """Client-side figures over [t0, t1] from the request logs."""

    logs: list[RequestLog]

    def tokens_per_second(self, t0: float, t1: float) -> float:
        n = sum(t0 <= t <= t1 for log in self.logs for t in log.token_times)
        return n / (t1 - t0)

    def requests_per_second(self, t0: float, t1: float) -> float:
        n = sum(1 for log in self.logs if log.ok and log.end and t0 <= log.end <= t1)
        return n / (t1 - t0)

    def mean_ttft(self, t0: float, t1: float) -> float | None:
        ttfts = [
            log.first_token - log.start
            for log in self.logs
            if log.first_token is not None and t0 <= log.first_token <= t1
        ]
        return sum(ttfts) / len(ttfts) if ttfts else None


class LoadGenerator(ClientSideTruth):
    def __init__(
        self,
        url: str,
        *,
        clients: int,
        prompt_words: int,
        max_tokens: int,
        shared_prefix_words: int = 0,
        seed: int = 1,
        model: str = SERVED_NAME,
        ignore_eos: int = 1,
    ) -> None:
        """``ignore_eos=0``: the model may stop early (SGLang then admits by its estimate of
        the tokens to come, not by max_tokens)."""
        self.url = url.rstrip("/") + "/v1/completions"
        self.model = model  # a served name: the base model or a LoRA adapter
        self.clients = clients
        self.prompt_words = prompt_words
        self.max_tokens = max_tokens
        self.ignore_eos = bool(ignore_eos)
        self.rng = random.Random(seed)
        self.prefix = " ".join(self.rng.choice(WORDS) for _ in range(shared_prefix_words))
        self.logs: list[RequestLog] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _prompt(self, rng: random.Random) -> str:
        # A unique head (a random number and words) unless a shared prefix comes first.
        unique = f"{rng.randrange(10**9)} " + " ".join(
            rng.choice(WORDS) for _ in range(self.prompt_words)
        )
        return f"{self.prefix} {unique}" if self.prefix else unique

    def _one(self, session: requests.Session, rng: random.Random) -> None:
        log = RequestLog(start=time.time())
        body = {
            "model": self.model,
            "prompt": self._prompt(rng),
            "max_tokens": self.max_tokens,
            "ignore_eos": self.ignore_eos,  # an extension: exactly max_tokens tokens
            "temperature": 0.0,
            "stream": True,
        }
        try:
            with session.post(self.url, json=body, stream=True, timeout=120) as r:
                if r.status_code != 200:
                    time.sleep(0.2)
                    return
                for line in r.iter_lines():
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("choices") and chunk["choices"][0].get("text") is not None:
                        now = time.time()
                        if log.first_token is None:
                            log.first_token = now
                        log.token_times.append(now)
            log.end = time.time()
            log.ok = True
        except requests.RequestException:
            time.sleep(0.2)  # the server is down or restarting: no busy loop
            return
        finally:
            with self._lock:
                self.logs.append(log)

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        with requests.Session() as s:
            s.trust_env = False
            while not self._stop.is_set():
                self._one(s, rng)

    def start(self) -> None:
        self._stop.clear()
        for _ in range(self.clients):
            t = threading.Thread(
                target=self._client, args=(self.rng.randrange(10**9),), daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 120.0) -> None:
        """Let in-flight requests finish (bounded), start no new ones."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads = []


class LoadProcess(ClientSideTruth):
    """The generator in a separate real-time-priority process; logs arrive when it stops."""

    def __init__(self, url: str, out: Path, **options: int | str) -> None:
        self.url, self.out, self.options = url, out, options
        self.logs = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [f"--{k.replace('_', '-')}={v}" for k, v in self.options.items()]
        self.out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "tests.realvllm.loadgen", "--url", self.url,
               "--out", str(self.out), *args]  # fmt: skip
        self.proc = subprocess.Popen(realtime(cmd), start_new_session=True)

    def stop(self, timeout: float = 150.0) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        if code == -signal.SIGTERM and not self.out.exists():
            return  # stopped while it was still starting, before it sent anything
        self.logs += [RequestLog(**x) for x in json.loads(self.out.read_text())]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--prompt-words", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--shared-prefix-words", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--model", default=SERVED_NAME)
    ap.add_argument("--ignore-eos", type=int, default=1)
    a = ap.parse_args()
    gen = LoadGenerator(
        a.url, clients=a.clients, prompt_words=a.prompt_words, max_tokens=a.max_tokens,
        shared_prefix_words=a.shared_prefix_words, seed=a.seed, model=a.model,
        ignore_eos=a.ignore_eos,
    )  # fmt: skip
    done = threading.Event()
    route({signal.SIGTERM: done.set})  # before the generator's threads start
    gen.start()
    done.wait(a.max_seconds)  # bounded even if nobody stops it
    gen.stop()
    with gen._lock:
        a.out.write_text(json.dumps([asdict(x) for x in gen.logs]))


if __name__ == "__main__":
    main()
