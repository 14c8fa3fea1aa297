"""Many open connections: what idle keep-alive connections cost a server between
requests, and what they do to its throughput.

For each server (the entries of ``bench/run.py``, one worker pinned to core 0,
started with the memory scenario's settings that lift idle timeouts):

1. hello throughput with wrk -c64 (the reference);
2. N idle keep-alive connections are opened (one GET each, then held open by a
   client process on core 1);
3. the server's CPU over a quiet window while they stay idle (ideally zero:
   a server that scans its connections on a timer pays for each of them);
4. hello throughput with wrk -c64 again, the N connections still open, as a
   share of step 1.

Rounds are interleaved across servers and medians reported. This machine caps
open files at 20,000 per process (the hard limit, which even root can't raise
here), so N defaults to 18,000, not the 100,000 a big machine would use.

    bench/.venv/bin/python bench/many_connections.py [--conns 18000] [--rounds 3]
        [--servers heron,uvicorn-httptools,granian,hypercorn] [--idle 10] [--duration 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run

HOLDER = r"""
import asyncio, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
sys.path.insert(0, sys.argv[3])
from bench.run import _open_idle

async def main():
    held = []
    failures = await _open_idle(int(sys.argv[1]), int(sys.argv[2]), held)
    print(f"held {len(held)} failed {failures}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until told to stop
    for w in held:
        w.close()

asyncio.run(main())
"""


def hello_rate(port: int, pid: int, duration: float) -> dict[str, Any]:
    sc = run.SCENARIOS["hello"]
    run.run_cmd(run.wrk_cmd(port, 1, sc, 64), timeout=60)  # warm-up
    window = run.CpuWindow(pid)
    rc, out, err = run.run_cmd(run.wrk_cmd(port, duration, sc, 64), timeout=duration + 60)
    r = run.parse_wrk(out)
    r.update(window.stop())
    if rc != 0:
        r["errors"] += 1
    return r


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    server = run.Server(name, run.SERVERS[name], "bench.apps:hello", mem=True)
    out: dict[str, Any] = {"errors": 0}
    holder = None
    try:
        server.start()
        pid = server.proc.pid  # type: ignore[union-attr]
        base = hello_rate(server.port, pid, args.duration)
        holder = subprocess.Popen(
            ["taskset", "-c", run.CLIENT_CPU, sys.executable, "-c", HOLDER, str(server.port), str(args.conns)]
            + [str(run.REPO_DIR)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = holder.stdout.readline().split() if holder.stdout else []  # "held N failed M"
        held = int(line[1]) if len(line) == 4 else 0
        time.sleep(1.0)
        cpu0 = run.tree_cpu_seconds(pid)
        time.sleep(args.idle)
        idle_cpu = run.tree_cpu_seconds(pid) - cpu0
        open_now = run.established_on_port(server.port)
        loaded = hello_rate(server.port, pid, args.duration)
        out.update(
            {
                "base_rps": base["rps"],
                "loaded_rps": loaded["rps"],
                "share": (loaded["rps"] or 0) / base["rps"] if base["rps"] else None,
                "idle_cpu_pct": 100 * idle_cpu / args.idle,
                "held": held,
                "open": open_now,
                "p99_base": base["p99_ms"],
                "p99_loaded": loaded["p99_ms"],
                "errors": base["errors"] + loaded["errors"] + (0 if held >= 0.99 * args.conns else 1),
            }
        )
    except run.ServerStartError as exc:
        out["errors"] += 1
        out["detail"] = str(exc)
    finally:
        if holder is not None:
            holder.communicate("", timeout=60)
        server.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=18000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--servers", default="heron,uvicorn-httptools,granian,hypercorn")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--out", default=str(run.BENCH_DIR / "results"))
    args = ap.parse_args()
    run.raise_nofile()
    names = args.servers.split(",")
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for rnd in range(args.rounds):
        for name in names:
            run.log(f"many-connections round {rnd + 1}/{args.rounds}: {name}")
            r = measure(name, args)
            run.log(
                f"    {r.get('base_rps') or 0:,.0f} req/s -> {r.get('loaded_rps') or 0:,.0f} with "
                f"{r.get('held', 0):,} idle open ({(r.get('share') or 0):.0%}); idle CPU "
                f"{r.get('idle_cpu_pct', 0):.2f}%  errors {r['errors']} {r.get('detail', '')}"
            )
            results[name].append(r)

    def med(name: str, key: str) -> float | None:
        values = [r[key] for r in results[name] if r.get(key) is not None and not r["errors"]]
        return statistics.median(values) if values else None

    stamp = time.strftime("%Y-%m-%d-%H%M")
    lines = [
        f"# Many connections, {stamp}",
        "",
        f"- {args.conns:,} idle keep-alive connections (one GET each), hello with wrk -t1 -c64 -d{args.duration:g}s "
        f"before and while they are open; idle CPU over {args.idle:g} s; medians of {args.rounds} interleaved rounds",
        "- one worker per server on core 0, clients on core 1; the machine is shared: read differences under ~10% "
        "as noise",
        f"- invocation: `bench/.venv/bin/python bench/many_connections.py {' '.join(sys.argv[1:])}`",
        "",
        "| server | hello req/s (64 conns) | with idle ones open | share | p99 ms (64 / with idle) "
        "| server CPU while idle | clean rounds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        clean = sum(1 for r in results[name] if not r["errors"])
        share = med(name, "share")
        lines.append(
            f"| {name} | {run.fmt(med(name, 'base_rps'))} | {run.fmt(med(name, 'loaded_rps'))} | "
            f"{f'{share:.0%}' if share is not None else '-'} | {run.fmt(med(name, 'p99_base'), 2)} / "
            f"{run.fmt(med(name, 'p99_loaded'), 2)} | {run.fmt(med(name, 'idle_cpu_pct'), 2)}% | "
            f"{clean}/{args.rounds} |"
        )
    path = Path(args.out) / f"{stamp}-many-connections.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
