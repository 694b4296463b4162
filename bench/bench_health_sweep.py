#!/usr/bin/env python3
"""Benchmark: sweep N stand-in BBB servers with the bbb-health CLI code.

Starts N (default 200) stand-in bbb-web API servers on 127.0.0.1 (one process,
all listening sockets served by a couple of selector threads), then checks them
with scripts/bbb-health's own check_all() concurrently and sequentially, and
compares the per-check cost with a bare urllib GET of the same index endpoint.
Prints figures only; there are no assertions on timing. Everything (clients and
servers) shares one Python process and its GIL, so absolute numbers are a lower
bound for what a real fleet costs; the ratios are what this is for.
"""

import argparse
import importlib.machinery
import importlib.util
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load(name, path):
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=200)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--serve-threads", type=int, default=2)
    ap.add_argument("--checks", default="index,meetings,recordings")
    ap.add_argument(
        "--delay-ms",
        type=int,
        default=0,
        help="stand-in answer delay (simulated network/server time)",
    )
    args = ap.parse_args()

    standin = load("bbb_api_standin", REPO / "tests" / "bbb_api_standin" / "bbb_api_standin.py")
    cli = load("bbb_health_cli", REPO / "scripts" / "bbb-health")

    secret = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        props = Path(tmp) / "bbb-web.properties"
        props.write_text(f"securitySalt={secret}\n")
        servers = [
            standin.make_server(str(props), "127.0.0.1", 0, delay_ms=args.delay_ms)
            for _ in range(args.servers)
        ]
        stop = threading.Event()
        threads = []
        for i in range(args.serve_threads):
            part = servers[i :: args.serve_threads]
            t = threading.Thread(target=standin.serve_many, args=(part, stop, 0.05), daemon=True)
            t.start()
            threads.append(t)
        try:
            targets = [
                {
                    "name": f"s{i}",
                    "url": f"http://127.0.0.1:{s.server_port}/bigbluebutton/api",
                    "secret": secret,
                    "algorithm": "sha256",
                    "ca_path": None,
                    "insecure": False,
                    "timeout": 10.0,
                }
                for i, s in enumerate(servers)
            ]
            checks = [c for c in args.checks.split(",") if c]
            opts = {"checks": checks, "latency_warn_ms": 0}
            cli.check_all(targets[:5], opts, workers=1)  # warm-up

            t0 = time.perf_counter()
            conc = cli.check_all(targets, opts, workers=args.workers)
            t_conc = time.perf_counter() - t0

            t0 = time.perf_counter()
            seq = cli.check_all(targets, opts, workers=1)
            t_seq = time.perf_counter() - t0

            t0 = time.perf_counter()
            for t in targets:
                with urllib.request.urlopen(t["url"], timeout=10) as resp:  # noqa: S310
                    resp.read()
            t_bare = time.perf_counter() - t0
        finally:
            stop.set()
            for t in threads:
                t.join(2)
            for s in servers:
                s.server_close()

    n = args.servers
    unhealthy = sum(1 for r in conc + seq if not r["healthy"])
    calls_per_check = len(checks)
    per_server_seq_ms = t_seq / n * 1000
    per_call_seq_ms = per_server_seq_ms / calls_per_check
    bare_ms = t_bare / n * 1000
    lat = [ms for r in seq for ms in r["latency_ms"].values()]
    print(f"stand-in delay per answer: {args.delay_ms} ms")
    print(f"servers: {n}  checks: {','.join(checks)} ({calls_per_check} API calls per server)")
    print(f"unhealthy results (should be 0): {unhealthy}")
    print(f"concurrent sweep ({args.workers} workers): {t_conc:.3f} s")
    print(f"sequential sweep:                 {t_seq:.3f} s")
    print(f"speed-up sequential/concurrent:   {t_seq / t_conc:.2f}x")
    print(f"per server (sequential):          {per_server_seq_ms:.2f} ms")
    print(f"per API call (sequential):        {per_call_seq_ms:.2f} ms")
    print(f"bare urllib GET of index:         {bare_ms:.2f} ms")
    print(f"per-call cost vs bare GET:        {per_call_seq_ms / bare_ms:.2f}x")
    print(
        f"client-measured call latency ms:  median {statistics.median(lat):.2f}, max {max(lat):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
