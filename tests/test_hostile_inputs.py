"""Bad input anywhere it enters — flags, configuration and catalog files (also on SIGHUP),
recordings, stopped recorders — gets one clear line and loses nothing that was running."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml

from tests.harness import Exporter, RecordedVllm, wait_for
from tests.paths import FIX, H200, UNDERBATCH

ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)  # 9^9 = 387 million strings once expanded, from a 300-byte file


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=timeout
    )


def one_line_error(r: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--web.listen-address", ":99999"], ["--web.listen-address", "0 to 65535"]),
        (["--web.listen-address", "9709"], ["--web.listen-address", "[HOST]:PORT"]),
        (["--vllm-url", "ftp://vllm:8000"], ["--vllm-url", "http://"]),
        (["--vllm-url", "http://"], ["--vllm-url"]),
        (["--vllm-url", "http://h:8000/\x1b[2J"], ["--vllm-url", "control characters"]),
        (["--gpu-source", "dcgm", "--dcgm-url", "file:///etc/passwd"], ["--dcgm-url"]),
        (["--model-params", "1e-300"], ["--model-params"]),
        (["--model-params", "nan"], ["--model-params"]),
        (["--cost-per-hour", "inf"], ["--cost-per-hour"]),
        (["--cost-per-hour", "1e400"], ["--cost-per-hour"]),
        (["--max-num-seqs", "1" * 400], ["--max-num-seqs"]),
        (["--tensor-parallel-size", "0"], ["--tensor-parallel-size"]),
        (["--horizon", "9" * 400], ["--horizon"]),
        (["--poll-interval", "0"], ["--poll-interval"]),
    ],
)
def test_invalid_flags_exit_2_with_one_line(args: list[str], words: list[str]) -> None:
    one_line_error(cli("serve", *args), 2, *words)


def test_credentials_in_a_bad_url_are_not_echoed() -> None:
    r = cli("serve", "--vllm-url", "ftp://bob:hunter2@vllm:8000")
    one_line_error(r, 2, "--vllm-url", "bob:xxxxx@")
    assert "hunter2" not in r.stderr


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (ALIAS_BOMB.encode(), ["aliases"]),
        (b"max-num-seqs: " + b"[" * 5000 + b"]" * 5000 + b"\n", ["nested deeper"]),
        (b"vllm-url: \xff\xfe\n", ["not UTF-8"]),
        (b"max-num-seqs: " + b"7" * 5000 + b"\n", ["--config"]),
        (b"max-num-seqs: " + b"7" * 400 + b"\n", ["max-num-seqs", "from 1 to"]),
        (b"- just\n- a list\n", ["expected a mapping"]),
    ],
)
def test_a_hostile_config_file_exits_2_quickly(
    tmp_path: Path, content: bytes, words: list[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    t0 = time.monotonic()
    r = cli("serve", "--config", str(path), timeout=60)
    assert time.monotonic() - t0 < 30  # the alias bomb took 50 s of CPU before
    one_line_error(r, 2, *words)


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("mem_bw_gbps: .inf", ["mem_bw_gbps", "from 1 to"]),
        ("mem_bw_gbps: .nan", ["mem_bw_gbps"]),
        ("bf16_tflops: 1e400", ["bf16_tflops"]),
        ("price_on_demand: 0.0000000001", ["price_on_demand"]),
    ],
)
def test_a_catalog_with_impossible_numbers_exits_2(
    tmp_path: Path, entry: str, words: list[str]
) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(f"gpus:\n  Mine:\n    match: ['mine']\n    {entry}\n")
    one_line_error(cli("serve", "--catalog-file", str(path)), 2, str(path), *words)


def write_recording(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


@pytest.mark.parametrize(
    "bad",
    [
        '{"t": Infinity, "source": "vllm", "error": "timeout"}',
        '{"t": NaN, "source": "vllm", "error": "timeout"}',
        '{"t": 1e999, "source": "vllm", "error": "timeout"}',
        '{"t": 1.0, "source": "nvml", "gpus": [{"index": 0, "power_mw": NaN}]}',
    ],
)
def test_non_finite_numbers_in_a_recording_are_refused(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "bad.jsonl"
    write_recording(path, ['{"t": 1.0, "source": "vllm", "error": "timeout"}', bad])
    one_line_error(cli("replay", str(path), "--print-metrics"), 1, "bad recording", ":2:")


def test_impossible_gpu_readings_in_a_recording_are_left_out(tmp_path: Path) -> None:
    with gzip.open(H200, "rt") as f:
        entries = [json.loads(x) for x in f]
    for e in entries:
        for g in e.get("gpus", []):
            g["util_gpu"] = 4294967295  # NVML's "not available"
            g["temperature_c"] = 1e300
    path = tmp_path / "gpu.jsonl"
    write_recording(path, [json.dumps(e) for e in entries])
    r = cli("replay", str(UNDERBATCH), "--gpu-replay", str(path), "--print-metrics")
    assert r.returncode == 0, r.stderr
    assert "vllm_profile_gpu_utilization_ratio" not in r.stdout
    assert "vllm_profile_gpu_temperature_celsius" not in r.stdout
    assert "vllm_profile_gpu_power_watts{" in r.stdout  # the sane fields are still there
    for line in r.stdout.splitlines():
        if not line.startswith("#"):
            assert not line.endswith(("NaN", "Inf")), line


def test_replay_uses_everything_before_a_damaged_tail(tmp_path: Path) -> None:
    data = UNDERBATCH.read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])  # a recorder killed mid-write
    r = cli("replay", str(cut), "--print-metrics")
    assert r.returncode == 0, r.stderr
    # the polls before the damage count
    assert "vllm_profile_observed_generation_tokens_total" in r.stdout
    assert "vllm_profile_requests_per_second" in r.stdout
    (warning,) = r.stderr.strip().splitlines()
    assert "compressed data ends early" in warning and "dropped" in warning
    plain = tmp_path / "cut.jsonl"
    with gzip.open(UNDERBATCH, "rt") as f:
        text = f.read()
    plain.write_text(text[: len(text) // 2])  # ends inside a line
    r = cli("replay", str(plain), "--print-metrics")
    assert r.returncode == 0 and "the last line is cut short" in r.stderr
    assert "1 partial line(s) dropped" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_recorder_leaves_a_whole_recording(tmp_path: Path, sig: int) -> None:
    vllm = RecordedVllm(UNDERBATCH)
    vllm.start()
    out = tmp_path / "rec.jsonl.gz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "record", "-o", str(out), "--duration", "10m",
         "--vllm-url", vllm.url, "--gpu-source", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: vllm.requests >= 8, 30, "a few polls recorded")
        proc.send_signal(sig)
        log, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        vllm.stop()
    assert proc.returncode == 0, log
    assert "stopped early" in log
    with gzip.open(out, "rt") as f:  # a complete gzip stream: reads to the end without error
        polls = [e for e in map(json.loads, f) if e.get("source") == "vllm"]
    assert len(polls) >= 6
    r = cli("replay", str(out))
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_a_recorder_that_cannot_write_stops_with_one_line() -> None:
    vllm = RecordedVllm(UNDERBATCH)
    vllm.start()
    try:
        r = cli("record", "-o", "/dev/full", "--duration", "20s", "--vllm-url", vllm.url,
                "--gpu-source", "none")  # fmt: skip
    finally:
        vllm.stop()
    one_line_error(r, 1, "No space left on device")


@pytest.mark.parametrize("command", [["record", "-o", "x.jsonl"], ["diagnose"]])
def test_no_answer_from_vllm_is_an_error_not_a_report(tmp_path: Path, command: list[str]) -> None:
    args = [
        *command,
        "--duration",
        "2s",
        "--vllm-url",
        "http://127.0.0.1:9",
        "--gpu-source",
        "none",
    ]
    if command[0] == "record":
        args[2] = str(tmp_path / "x.jsonl")
    r = cli(*args)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]  # after the (rate-limited) poll warnings
    assert "no poll of vLLM at http://127.0.0.1:9 succeeded" in last and "connect" in last


# --- SIGHUP


def web_config(path: Path, users: dict[str, str]) -> None:
    hashed = {u: bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()
              for u, p in users.items()}  # fmt: skip
    path.write_text(yaml.safe_dump({"basic_auth_users": hashed}))


def test_reload_refuses_bad_files_whole_and_applies_good_ones_whole(tmp_path: Path) -> None:
    first, second = RecordedVllm(UNDERBATCH), RecordedVllm(UNDERBATCH)
    first.start()
    second.start()
    web = tmp_path / "web.yml"
    web_config(web, {"alice": "old-password"})
    config = tmp_path / "exporter.yaml"

    def write(**options: object) -> None:
        base = {"vllm-url": first.url, "cost-per-hour": 5, "max-num-seqs": 64,
                "gpu-source": "none", "web.config.file": str(web)}  # fmt: skip
        config.write_text(yaml.safe_dump({**base, **options}))

    write()
    alice = ("alice", "old-password")

    class AuthExporter(Exporter):
        def _ready(self) -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(self.log)
            return requests.get(self.url + "/-/ready", auth=alice, timeout=5).status_code == 200

    exporter = AuthExporter("--config", str(config))

    def value(name: str, auth: tuple[str, str] = alice) -> float | None:
        r = requests.get(exporter.url + "/metrics", auth=auth, timeout=5)
        for line in r.text.splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
        return None

    try:
        wait_for(lambda: value("vllm_profile_cost_per_hour_dollars") == 5.0, 20, "a cost")
        bad_files = [
            b"cost-per-hour: 9\nvllm-url: \xff\n",  # invalid UTF-8
            b"cost-per-hour: 9\nmax-num-seqs: " + b"1" * 400 + b"\n",  # a 400-digit number
            b"cost-per-hour: " + b"[" * 3000 + b"]" * 3000 + b"\n",  # deep nesting
            ALIAS_BOMB.encode(),
            b"cost-per-hour: 9\nweb.listen-address: 127.0.0.1:1\n",  # needs a restart
        ]
        seen = 0
        for content in bad_files:
            config.write_bytes(content)
            exporter.proc.send_signal(signal.SIGHUP)
            seen = exporter.wait_log("reload failed, keeping the running configuration", 30,
                                     after=seen) + 1  # fmt: skip
            assert exporter.proc.poll() is None
            assert value("vllm_profile_cost_per_hour_dollars") == 5.0
            assert value("vllm_profile_config_epoch") == 0.0
        assert "cannot change without a restart" in exporter.log
        served = second.requests
        # A good file: every part applies — price, web config (alice revoked), and the URL.
        web_config(web, {"bob": "new-password"})
        write(**{"vllm-url": second.url, "cost-per-hour": 7})
        exporter.proc.send_signal(signal.SIGHUP)
        exporter.wait_log("configuration reloaded", 30)
        bob = ("bob", "new-password")
        wait_for(lambda: value("vllm_profile_cost_per_hour_dollars", bob) == 7.0, 20, "new price")
        assert value("vllm_profile_config_epoch", bob) == 1.0
        r = requests.get(exporter.url + "/metrics", auth=alice, timeout=5)
        assert r.status_code == 401  # a revoked password no longer works
        wait_for(lambda: second.requests > served + 4, 20, "polls of the new --vllm-url")
        moved = first.requests
        wait_for(lambda: second.requests > served + 12, 20, "more polls of the new URL")
        assert first.requests <= moved + 1  # the old URL is no longer polled
    finally:
        exporter.stop()
        first.stop()
        second.stop()


def test_url_credentials_are_shown_nowhere(tmp_path: Path) -> None:
    vllm = RecordedVllm(UNDERBATCH)
    vllm.start()
    url = vllm.url.replace("http://", "http://bob:s3cr3t-pw@")
    out = tmp_path / "rec.jsonl"
    try:
        exporter = Exporter("--vllm-url", url, "--gpu-source", "none")
        try:
            page = requests.get(exporter.url + "/", timeout=5).text
            wait_for(lambda: "vllm_profile_up{" in exporter.metrics(), 20, "metrics")
            metrics = exporter.metrics()
        finally:
            log = exporter.stop()
        rec = cli("record", "-o", str(out), "--duration", "2s", "--vllm-url", url,
                  "--gpu-source", "none")  # fmt: skip
    finally:
        vllm.stop()
    assert rec.returncode == 0, rec.stderr
    for shown in (page, log, metrics, rec.stderr, out.read_text()):
        assert "s3cr3t-pw" not in shown
    assert "bob:xxxxx@" in page and "bob:xxxxx@" in log


def test_terminal_escapes_from_vllm_are_shown_not_obeyed(tmp_path: Path) -> None:
    with gzip.open(UNDERBATCH, "rt") as f:
        entries = [json.loads(x) for x in f]
    for e in entries:
        if "body" in e and e.get("source") == "vllm":
            e["body"] = e["body"].replace('model_name="', 'model_name="\x1b]0;owned\x07\x1b[2J')
    path = tmp_path / "escapes.jsonl"
    write_recording(path, [json.dumps(e) for e in entries])
    r = cli("replay", str(path), "--diagnose", "--max-num-seqs", "64")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "\\x1b[2J" in r.stdout  # shown as text, where the model name is printed


# --- files and signals: nothing read unbounded, nothing blocking, reloads one at a time -------


def test_files_that_never_end_or_block_are_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    for args, words in (
        (["--web.config.file", "/dev/zero"], ["--web.config.file", "not a regular file"]),
        (["--config", str(fifo)], ["--config", "not a regular file"]),
        (["--catalog-file", "/dev/zero"], ["/dev/zero", "not a regular file"]),
    ):
        t0 = time.monotonic()
        r = cli("serve", "--gpu-source", "none", *args, timeout=30)
        one_line_error(r, 2, *words)
        assert time.monotonic() - t0 < 20  # no read of an endless file, no wait on a FIFO
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(5 * 1024 * 1024)  # a sparse 5 MiB file: over the 4 MiB a file may be
    one_line_error(cli("serve", "--config", str(big)), 2, "larger than 4 MiB")


def test_a_recording_line_that_never_ends_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    # ~65 KB of gzip holding one line of 64 MiB (bigger than any poll): refused without
    # reading it whole.
    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(b'{"t": 1, "source": "vllm", "body": "')
        for _ in range(64):
            f.write(b"a" * (1024 * 1024))
    proc = subprocess.run(
        [sys.executable, "-c",
         "import resource, subprocess, sys; "
         "r = subprocess.run([sys.executable, '-m', 'exporter', 'replay', sys.argv[1]], "
         "capture_output=True, text=True); "
         "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
         "print(r.stderr, file=sys.stderr)", str(bomb)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    code, maxrss_kib = map(int, proc.stdout.split())
    assert code == 1 and "a line over" in proc.stderr and "Traceback" not in proc.stderr
    assert maxrss_kib * 1024 < 400 * 1024 * 1024  # the 48 Mi-character bound, not the line


def test_recording_into_a_fifo_nobody_reads_fails_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    vllm = RecordedVllm(UNDERBATCH)
    vllm.start()
    try:
        r = cli("record", "-o", str(fifo), "--duration", "20s", "--vllm-url", vllm.url,
                "--gpu-source", "none", timeout=30)  # fmt: skip
    finally:
        vllm.stop()
    one_line_error(r, 1, "no process is reading this FIFO")


def sigterm_seconds(exporter: Exporter) -> float:
    """SIGTERM, and how long the exporter took to exit."""
    t0 = time.monotonic()
    exporter.proc.send_signal(signal.SIGTERM)
    exporter.proc.wait(timeout=30)
    stopped = time.monotonic() - t0
    exporter.stop()  # reaped already: closes its log pipe
    return stopped


def occupancy_cap(exporter: Exporter) -> float | None:
    """--max-num-seqs as the running exporter applies it: running / occupancy."""
    text = exporter.metrics()
    values = {}
    for line in text.splitlines():
        for name in ("vllm_profile_requests_running", "vllm_profile_scheduler_occupancy_ratio"):
            if line.startswith(name + " "):
                values[name] = float(line.split()[1])
    if len(values) < 2 or not values["vllm_profile_scheduler_occupancy_ratio"]:
        return None
    return round(
        values["vllm_profile_requests_running"] / values["vllm_profile_scheduler_occupancy_ratio"]
    )


def test_a_storm_of_reloads_ends_on_the_file_as_it_is(tmp_path: Path) -> None:
    """200 SIGHUPs in a few seconds while the file alternates: no reload runs inside another,
    nothing raises, and the configuration in force is the file's last; then SIGTERM stops the
    exporter within 2 s."""
    vllm = RecordedVllm(FIX / "vllm" / "vllm032-cpu-c-saturation.jsonl.gz")
    vllm.start()
    config = tmp_path / "exporter.yaml"

    def write(mns: int) -> None:
        tmp = tmp_path / "exporter.yaml.new"
        tmp.write_text(yaml.safe_dump({"vllm-url": vllm.url, "gpu-source": "none",
                                       "max-num-seqs": mns}))  # fmt: skip
        os.replace(tmp, config)

    write(4)
    exporter = Exporter("--config", str(config))
    try:
        wait_for(lambda: occupancy_cap(exporter) == 4, 30, "the first configuration")
        for i in range(200):
            write(8 if i % 2 else 16)
            exporter.proc.send_signal(signal.SIGHUP)
        write(32)
        exporter.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: occupancy_cap(exporter) == 32, 60, "the file's last configuration")
        assert exporter.proc.poll() is None
        assert "RecursionError" not in exporter.log and "Traceback" not in exporter.log
        assert "reload failed" not in exporter.log
    finally:
        stopped = sigterm_seconds(exporter)
        vllm.stop()
    assert stopped < 2.0, stopped


def test_signals_sent_back_to_back_never_hang_the_exporter() -> None:
    """20,000 SIGHUPs sent with no pause between them, then SIGTERM, five times over: the
    exporter exits each time. (A handler that set an event could run inside that same event's
    lock in the main thread and wait on it for good: before signals had a thread of their own,
    three of five such bursts hung the exporter.)"""
    vllm = RecordedVllm(UNDERBATCH)
    vllm.start()
    try:
        for _ in range(5):
            exporter = Exporter("--vllm-url", vllm.url, "--gpu-source", "none")
            try:
                wait_for(exporter.metrics, 30, "the exporter's first /metrics")
                for _ in range(20_000):
                    os.kill(exporter.proc.pid, signal.SIGHUP)
                wait_for(exporter.metrics, 30, "/metrics after the burst")
            finally:
                stopped = sigterm_seconds(exporter)
            assert stopped < 10.0, stopped
            assert "Traceback" not in exporter.log
    finally:
        vllm.stop()


def test_a_fifo_in_place_of_the_config_neither_blocks_a_reload_nor_sigterm(
    tmp_path: Path,
) -> None:
    vllm = RecordedVllm(UNDERBATCH)
    vllm.start()
    config = tmp_path / "exporter.yaml"
    config.write_text(yaml.safe_dump({"vllm-url": vllm.url, "gpu-source": "none"}))
    exporter = Exporter("--config", str(config))
    try:
        config.unlink()
        os.mkfifo(config)
        exporter.proc.send_signal(signal.SIGHUP)
        exporter.wait_log("not a regular file", 20)
        assert exporter.proc.poll() is None
    finally:
        stopped = sigterm_seconds(exporter)
        vllm.stop()
    assert stopped < 2.0, stopped
