"""The server attacked as a hostile local client would (issue 11), with figures.

    python bench/attack_server.py                       # every attack, the issue's sizes
    python bench/attack_server.py --only fuzz,flood --fuzz 10000 --flood 200
    python bench/attack_server.py --only kill --kills 20

Real UDP on loopback, real files and FIFOs, the embedded Spleeter 2-stem model on 1-s
tones. Prints, per attack, counts (crashes, tracebacks in the log, accepted/refused jobs,
bytes on disk, temp files left, stems that differ) and times as ratios against a
reference run of the same job in the same process (no timed assertions anywhere):

- fuzz: N malformed datagrams; the server still answers, `internal` errors, tracebacks
  logged, RSS growth.
- slow: sources that used to hang the one worker (an HLS playlist whose segment is a
  FIFO, a source swapped for a FIFO or /dev/zero after `job/accepted`, a source swapped
  for a FIFO after `job/started`); then another client's job: its time over the
  reference job's.
- flood: one socket sends N splits naming 20 reply ports; accepted vs `too_many_jobs`;
  then an honest client's job: its time over the reference's.
- disk: N jobs of distinct sources with 8 MiB budgets for job folders and the cache;
  bytes used afterwards.
- kill: N jobs each in a fresh `stembridge serve` process killed with SIGKILL at a random
  moment, then a new server on the same folders: each job resumes or fails cleanly;
  stems compared bit for bit with an uninterrupted run; temporary files left.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.client import Client, ClientError  # noqa: E402
from protocol.messages import Address, SplitRequest, decode, encode  # noqa: E402

MODEL = "spleeter-2stems"


def tone(path: Path, freq: float, seconds: float = 1.0, sr: int = 44100) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.4 * np.sin(2 * np.pi * freq * t) + 0.05 * np.sin(2 * np.pi * 3.1 * freq * t)
    sf.write(path, np.stack([x, 0.8 * x], 1), sr, subtype="FLOAT")
    return path


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Tracebacks(logging.Handler):
    """Counts log records that carry a traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.count += 1


def make_server(work: Path, **config: Any) -> Any:
    from bridge.server import ServerConfig, StembridgeServer
    from engine.config import EngineConfig
    from engine.separator import Engine

    cache_max = config.pop("cache_max_bytes", 0)
    engine = Engine(EngineConfig(precision="fp32", cache_dir=work / "cache",
                                 cache_max_bytes=cache_max))
    engine.model(MODEL)
    return StembridgeServer(ServerConfig(port=0, output_root=work / "jobs",
                                         write_discovery=False, **config), engine).start()


def run_job(server: Any, src: Path, timeout: float = 300.0) -> tuple[float, str]:
    """Seconds from submit to the job's end, and how it ended."""
    with Client(*server.address, timeout=30) as c:
        t0 = time.perf_counter()
        try:
            job = c.split(src, model=MODEL)
            last = [k for k, _ in c.events(job, timeout=timeout)][-1]
        except ClientError as err:
            last = err.code
        return time.perf_counter() - t0, last


def fuzz_packets(n: int, rng: random.Random) -> list[bytes]:
    good = [encode(Address.PING, 1), encode(Address.STATUS, ""), encode(Address.JOBS),
            encode(Address.SPLIT, {"request_id": 1, "source": "/x.wav"}),
            encode(Address.HELLO, {"protocol": 1, "token": "pässwort"})]
    out = []
    for i in range(n):
        kind = i % 7
        if kind == 0:
            out.append(rng.randbytes(rng.randint(0, 300)))
        elif kind == 1:
            g = rng.choice(good)
            out.append(g[: rng.randint(0, len(g) - 1)])
        elif kind == 2:
            flipped = bytearray(rng.choice(good))
            for _ in range(rng.randint(1, 4)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            out.append(bytes(flipped))
        elif kind == 3:
            out.append(encode(f"/stembridge/{rng.randint(0, 9999)}", rng.randint(0, 9)))
        elif kind == 4:
            out.append(encode(Address.SPLIT, rng.randbytes(rng.randint(0, 64))))
        elif kind == 5:
            out.append(encode(Address.SPLIT, {"request_id": 2, "source": "/a\0b",
                                              "start_at": 1e308, "output_root": "x" * 300}))
        else:
            out.append(encode(Address.SPLIT, {"request_id": "x", "source": 5, "stems": 3})
                       if rng.random() < 0.5 else rng.randbytes(60000))
    return out


def attack_fuzz(work: Path, n: int, tracebacks: Tracebacks) -> None:
    server = make_server(work / "fuzz")
    try:
        before, rss0, tb0 = dict(server.stats), rss_mib(), tracebacks.count
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        unacked = 0
        for i, p in enumerate(fuzz_packets(n, random.Random(11))):
            sock.sendto(p, server.address)
            unacked += len(p)
            if unacked > 64_000:  # flow control: the receive buffer drops what overflows
                deadline = time.time() + 5
                while server.stats["received"] - before["received"] < i + 1 and \
                        time.time() < deadline:
                    time.sleep(0.0005)
                unacked = 0
        sock.close()
        deadline = time.time() + 30
        while server.stats["received"] - before["received"] < n and time.time() < deadline:
            time.sleep(0.05)
        with Client(*server.address, timeout=5) as c:
            pings = [c.ping() for _ in range(5)]
        got = {k: server.stats[k] - before[k] for k in before}
        print(f"fuzz: {n} datagrams sent, {got['received']} received; server up: yes; "
              f"internal errors {got['internal']}; tracebacks logged "
              f"{tracebacks.count - tb0}; RSS {rss0:.0f} -> {rss_mib():.0f} MiB; ping after "
              f"{1000 * min(pings):.2f}-{1000 * max(pings):.2f} ms; jobs in memory "
              f"{len(server.jobs)}")
    finally:
        server.stop()


def attack_slow(work: Path) -> None:
    work.mkdir(parents=True)
    server = make_server(work)
    try:
        reference, _ = run_job(server, tone(work / "ref.wav", 330.0))
        results = []
        fifo_seg = work / "seg.ts"
        os.mkfifo(fifo_seg)
        playlist = work / "list.m3u8"
        playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nseg.ts\n"
                            "#EXT-X-ENDLIST\n")
        results.append(("m3u8 with a FIFO segment", run_job(server, playlist)))
        for name, swap in (("FIFO after accepted", "fifo"), ("/dev/zero after accepted",
                                                             "zero")):
            src = tone(work / f"{swap}.wav", 500.0, seconds=20.0)
            with Client(*server.address, timeout=30) as c:
                t0 = time.perf_counter()
                job = c.split(src, model=MODEL)
                swapped = work / f"{swap}.new"
                if swap == "fifo":
                    os.mkfifo(swapped)
                else:
                    swapped.symlink_to("/dev/zero")
                os.replace(swapped, src)  # atomic: the path never goes missing
                try:
                    last = [k for k, _ in c.events(job, timeout=120)][-1]
                except ClientError as err:
                    last = err.code
                results.append((name, (time.perf_counter() - t0, last)))
        src = tone(work / "started.wav", 600.0, seconds=20.0)
        with Client(*server.address, timeout=30) as c:
            t0 = time.perf_counter()
            job = c.split(src, model=MODEL)
            last = ""
            try:
                for kind, _ in c.events(job, timeout=120):
                    last = kind
                    if kind == "started" and not src.is_fifo():
                        os.mkfifo(work / "started.new")
                        os.replace(work / "started.new", src)
            except ClientError as err:
                last = err.code
            results.append(("FIFO after started", (time.perf_counter() - t0, last)))
        other, how = run_job(server, tone(work / "other.wav", 440.0))
        for name, (seconds, last) in results:
            print(f"slow: {name}: ended {last!r} after {seconds:.2f} s")
        print(f"slow: another client's job afterwards: {how!r}, {other / reference:.2f}x the "
              "reference job's time (same job, same process)")
    finally:
        server.stop()


def attack_flood(work: Path, n: int) -> None:
    work.mkdir(parents=True)
    server = make_server(work)
    receivers = []
    try:
        reference, _ = run_job(server, tone(work / "ref.wav", 330.0))
        src = tone(work / "hog.wav", 220.0)
        for _ in range(20):
            r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            r.bind(("127.0.0.1", 0))
            r.settimeout(10)
            receivers.append(r)
        counts: dict[str, int] = {}
        with Client(*server.address, timeout=30) as hog:
            for k in range(n):
                r = receivers[k % len(receivers)]
                hog.send(Address.SPLIT, SplitRequest(source=str(src), request_id=k + 1,
                                                     model=MODEL,
                                                     reply_port=r.getsockname()[1]).to_payload())
                while True:  # the first answer to this request on its reply port
                    msg = decode(r.recvfrom(70000)[0])
                    if msg.address == Address.ACCEPTED:
                        counts["accepted"] = counts.get("accepted", 0) + 1
                        break
                    if msg.address == Address.ERROR:
                        from protocol.messages import ErrorMsg

                        err = ErrorMsg.from_message(msg)
                        if err.request_id == k + 1:
                            code = getattr(err.code, "value", str(err.code))
                            counts[code] = counts.get(code, 0) + 1
                            break
            honest, how = run_job(server, tone(work / "honest.wav", 440.0))
        print(f"flood: {n} splits from one socket naming {len(receivers)} reply ports: "
              f"{counts}; an honest client's job then ended {how!r} in "
              f"{honest / reference:.2f}x the reference job's time")
    finally:
        for r in receivers:
            r.close()
        server.stop()


def du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) \
        if folder.exists() else 0


def attack_disk(work: Path, n: int) -> None:
    work.mkdir(parents=True)
    budget = 8 << 20
    server = make_server(work, jobs_max_bytes=budget, regions_grace_s=0.0,
                         cache_max_bytes=budget)
    try:
        ends: dict[str, int] = {}
        sources = 0
        for i in range(n):
            src = tone(work / "src.wav", 200.0 + 7 * i)
            sources += src.stat().st_size
            if i % 10 == 9:  # and a cancelled job now and then
                with Client(*server.address, timeout=30) as c:
                    job = c.split(tone(work / "long.wav", 150.0, seconds=30.0), model=MODEL)
                    c.send(Address.CANCEL, job)
            _, how = run_job(server, src)
            ends[how] = ends.get(how, 0) + 1
        server.housekeeping()  # the last job's sweep may still be running: run one now
        jobs, cache = du(work / "jobs"), du(work / "cache")
        print(f"disk: {n} jobs ({ends}); sources {sources / 2**20:.1f} MiB; job folders "
              f"{jobs / 2**20:.1f} MiB, cache {cache / 2**20:.1f} MiB (budgets 8 MiB each); "
              f"folders on disk {sum(1 for _ in (work / 'jobs').iterdir())}; jobs in memory "
              f"{len(server.jobs)}")
    finally:
        server.stop()


def _serve(work: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--port", "0",
                             "--output-root", str(work / "jobs"), "--preload", MODEL,
                             "--precision", "fp32"],  # as the reference run
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            return proc, int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    raise RuntimeError("the server did not start")


def attack_kill(work: Path, n: int) -> None:
    from engine.config import EngineConfig
    from engine.separator import Engine

    work.mkdir(parents=True)
    rng = random.Random(5)
    engine = Engine(EngineConfig(precision="fp32", use_cache=False))
    outcomes: dict[str, int] = {}
    differ = temps = 0
    for i in range(n):
        round_dir = work / f"r{i}"
        round_dir.mkdir()
        src = tone(round_dir / "song.wav", 250.0 + 11 * i, seconds=20.0)
        job_ref, regions = engine.split(SplitRequest(source=str(src), model=MODEL))
        ref = {s: np.zeros((job_ref.channels, job_ref.frames), np.float32)
               for s in job_ref.stem_names}
        for r in regions:
            for s, a in r.stems.items():
                ref[s][:, r.start:r.end] = a
        env = {**os.environ, "STEMBRIDGE_CACHE_DIR": str(round_dir / "cache"),
               "PYTHONPATH": str(ROOT)}
        proc, port = _serve(round_dir, env)
        with Client("127.0.0.1", port, timeout=30) as c:
            job = c.split(src, model=MODEL)
            time.sleep(rng.uniform(0.0, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc, port = _serve(round_dir, env)
        try:
            with Client("127.0.0.1", port, timeout=30) as c:
                deadline = time.time() + 300
                state = "unknown_job"
                while time.time() < deadline:
                    try:
                        state = c.status(job)["state"]
                    except ClientError as err:
                        state = err.code
                        break
                    if state not in ("queued", "running"):
                        break
                    time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        folder = round_dir / "jobs" / job
        if state == "unknown_job":  # it finished before the kill: a new server forgets it
            import json

            state = json.loads((folder / "manifest.json").read_text())["state"] + \
                " before the kill"
        outcomes[state] = outcomes.get(state, 0) + 1
        if state.startswith("done"):
            for s, want in ref.items():
                got, _ = sf.read(folder / f"{s}.wav", dtype="float32", always_2d=True)
                differ += int(not np.array_equal(got.T, want))
        left = [p for p in (round_dir / "jobs").rglob(".*") if p.is_file()]
        temps += len(left)
        for p in left:
            print(f"kill: round {i}: temporary file left: {p.relative_to(round_dir)}")
    print(f"kill: {n} jobs killed with SIGKILL at a random moment (0-3 s after accept) and "
          f"restarted: {outcomes}; stems differing from an uninterrupted run: {differ}; "
          f"temporary files left: {temps}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="fuzz,slow,flood,disk,kill")
    p.add_argument("--fuzz", type=int, default=10_000)
    p.add_argument("--flood", type=int, default=200)
    p.add_argument("--disk-jobs", type=int, default=100)
    p.add_argument("--kills", type=int, default=20)
    args = p.parse_args(argv)
    tracebacks = Tracebacks()
    logging.getLogger("stembridge").addHandler(tracebacks)
    logging.getLogger("stembridge").setLevel(logging.INFO)
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="stembridge-attack-") as tmp:
        work = Path(tmp)
        for name, run in (("fuzz", lambda: attack_fuzz(work, args.fuzz, tracebacks)),
                          ("slow", lambda: attack_slow(work / "slow")),
                          ("flood", lambda: attack_flood(work / "flood", args.flood)),
                          ("disk", lambda: attack_disk(work / "disk", args.disk_jobs)),
                          ("kill", lambda: attack_kill(work / "kill", args.kills))):
            if name in only:
                t0 = time.perf_counter()
                run()
                print(f"  ({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
        print(f"tracebacks logged in all: {tracebacks.count}")


if __name__ == "__main__":
    main()
