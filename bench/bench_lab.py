#!/usr/bin/env python3
"""Lab benchmark: converge times and the per-task cost of the connection.

Measured in one run, on this machine, so the ratios compare like with like
(absolute seconds on a shared 2-core machine are noisy; the ratios less so):

1. first converge of playbooks/site.yml on freshly created lab hosts;
2. a no-op rerun, which must report changed=0 on every host (exit 1 if not);
3. per-module-run cost of SSH with pipelining + ControlPersist (what the lab
   and production use) against the containers.podman.podman connection
   plugin, on the same host: (time of N module runs - time of 0) / N,
   best of --repeat runs.

WARNING: step 1 recreates the lab hosts (`scripts/lab.sh down` then `hosts`).
Usage: python bench/bench_lab.py [--tasks 40] [--repeat 3] [--skip-converge]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INVENTORY = REPO / "inventories" / "lab"
VAULT_PASS = REPO / "lab-state" / "vault-pass"
ENV = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
ENV["PATH"] = f"{REPO / '.venv' / 'bin'}:{ENV['PATH']}"
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", re.MULTILINE)


def run(cmd, **kw):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, check=False, **kw)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"command failed: {' '.join(map(str, cmd))}")
    return elapsed, proc.stdout


def playbook(path, *extra):
    return run(
        [
            "ansible-playbook",
            "-i",
            str(INVENTORY),
            "--vault-password-file",
            str(VAULT_PASS),
            str(path),
            *extra,
        ]
    )


def lab_hosts():
    _, out = run(
        [
            "ansible-inventory",
            "-i",
            str(INVENTORY),
            "--list",
            "--vault-password-file",
            str(VAULT_PASS),
        ]
    )
    hostvars = json.loads(out)["_meta"]["hostvars"]
    return {
        h: v["lab_container_name"] for h, v in sorted(hostvars.items()) if "lab_container_name" in v
    }


def per_task_cost(host, container, tasks, repeat, podman):
    extra = ["-e", f"bench_hosts={host}"]
    if podman:
        extra += [
            "-e",
            "ansible_connection=containers.podman.podman",
            "-e",
            f"ansible_host={container}",
        ]
    times = {}
    for n in (0, tasks):
        best = min(
            playbook(REPO / "bench" / "noop_tasks.yml", *extra, "-e", f"bench_tasks={n}")[0]
            for _ in range(repeat)
        )
        times[n] = best
    return (times[tasks] - times[0]) / tasks, times


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--tasks", type=int, default=40, help="module runs per measurement (default 40)"
    )
    ap.add_argument(
        "--repeat", type=int, default=3, help="take the best of this many runs (default 3)"
    )
    ap.add_argument(
        "--skip-converge", action="store_true", help="keep the lab; only measure connections"
    )
    args = ap.parse_args()

    results = {}
    if not args.skip_converge:
        print(
            "==> recreating the lab hosts (scripts/lab.sh down; scripts/lab.sh hosts)", flush=True
        )
        run(["bash", "scripts/lab.sh", "down"])
        run(["bash", "scripts/lab.sh", "hosts"])
        print("==> first converge of site.yml", flush=True)
        results["first_converge_s"], _ = playbook(REPO / "playbooks" / "site.yml")
        print("==> no-op rerun of site.yml", flush=True)
        results["rerun_s"], out = playbook(REPO / "playbooks" / "site.yml")
        changed = {h: int(c) for h, c in RECAP.findall(out)}
        results["rerun_changed"] = changed
        if any(changed.values()) or not changed:
            print(f"rerun was not a no-op: {changed}")
            return 1

    host, container = next(iter(lab_hosts().items()))
    print(f"==> per-task cost on {host}: SSH (pipelining) vs podman connection", flush=True)
    ssh, ssh_t = per_task_cost(host, container, args.tasks, args.repeat, podman=False)
    pod, pod_t = per_task_cost(host, container, args.tasks, args.repeat, podman=True)
    results.update(ssh_per_task_ms=ssh * 1000, podman_per_task_ms=pod * 1000)

    print("\nResults (one run, this machine):")
    if "first_converge_s" in results:
        print(f"  first converge          {results['first_converge_s']:8.1f} s")
        hosts = len(changed)
        print(
            f"  no-op rerun             {results['rerun_s']:8.1f} s   (changed=0 on {hosts} hosts)"
        )
        print(f"  rerun / first converge  {results['rerun_s'] / results['first_converge_s']:8.2f}")
    n = args.tasks
    for label, cost, t in (("SSH", ssh, ssh_t), ("podman", pod, pod_t)):
        detail = f"(0 runs {t[0]:.1f} s, {n} runs {t[n]:.1f} s)"
        print(f"  {label + ' per module run':24}{cost * 1000:8.0f} ms  {detail}")
    print(f"  podman / SSH            {pod / ssh:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
