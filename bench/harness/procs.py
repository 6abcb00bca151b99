"""Processes of a benchmark run: starting them pinned to a CPU, waiting until they are healthy,
stopping them by PID; and what /proc says about them (CPU time, per-thread CPU, RSS/PSS) and
about the machine (per-core busy and steal time, for the noise check)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import CLK_TCK, HOST, LOGS, REPO_ROOT
from harness.load import http

# -- /proc sampling --------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime+stime ticks, starttime) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # fields from #3 (state) on; comm may hold spaces
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19])


def session_members(sid: int) -> list[int]:
    """PIDs of the processes whose session id is ``sid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                raw = Path(f"/proc/{entry}/stat").read_text()
                if int(raw[raw.rindex(")") + 2 :].split()[3]) == sid:
                    out.append(int(entry))
    return out


def tree(root: int) -> list[int]:
    """``root`` and all its descendants (scanning /proc for parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _stat(pid) is None:
            continue
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """utime+stime of every process in ``root``'s tree, in seconds."""
    ticks = 0
    for pid in tree(root):
        st = _stat(pid)
        if st is not None:
            ticks += st[1]
    return ticks / CLK_TCK


def thread_cpu(root: int) -> dict[str, float]:
    """CPU seconds per (process role, thread name) in ``root``'s tree: where the time goes."""
    out: dict[str, float] = {}
    for pid in tree(root):
        role = "main" if pid == root else "worker"
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError):
                    raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
                    fields = raw[raw.rindex(")") + 2 :].split()
                    key = f"{role}:{comm}"
                    out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def thread_cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    keys = sorted(set(before) | set(after), key=lambda k: -(after.get(k, 0.0) - before.get(k, 0.0)))
    return {
        k: round(after.get(k, 0.0) - before.get(k, 0.0), 3) for k in keys if after.get(k) != before.get(k)
    }


def _status_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1])
    return out


def memory(root: int) -> dict[str, Any]:
    """VmRSS / VmHWM / PSS (MB) of every process in the tree, and the sums (all and workers only)."""
    procs: list[dict[str, Any]] = []
    for pid in tree(root):
        kb = _status_kb(pid)
        role = "main" if pid == root else "worker"
        procs.append(
            {
                "pid": pid,
                "role": role,
                "rss_mb": round(kb.get("VmRSS", 0) / 1024, 1),
                "hwm_mb": round(kb.get("VmHWM", 0) / 1024, 1),
                "pss_mb": round(kb.get("Pss", 0) / 1024, 1),
            }
        )

    def total(key: str, only: str | None = None) -> float:
        return round(sum(float(p[key]) for p in procs if only is None or p["role"] == only), 1)

    return {
        "processes": procs,
        "tree_rss_mb": total("rss_mb"),
        "tree_hwm_mb": total("hwm_mb"),
        "tree_pss_mb": total("pss_mb"),
        "workers_rss_mb": total("rss_mb", "worker"),
        "workers_hwm_mb": total("hwm_mb", "worker"),
    }


def core_ticks() -> dict[str, tuple[int, int]]:
    """Per core: (user+nice+system ticks, steal ticks) from /proc/stat."""
    out: dict[str, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            v = [int(x) for x in vals]
            out[name] = (v[0] + v[1] + v[2], v[7] if len(v) > 7 else 0)
    return out


def noise_report(
    wall: float,
    c0: dict[str, tuple[int, int]],
    c1: dict[str, tuple[int, int]],
    k0: tuple[float, float],
    k1: tuple[float, float],
) -> dict[str, Any]:
    """How much of each core's time went to processes that are not part of the benchmark
    (busy time on the core minus the CPU time of the benchmark's own processes there), and
    to hypervisor steal. Softirq time (loopback networking) is left out of both."""
    out: dict[str, Any] = {"wall_s": round(wall, 2)}
    worst = 0.0
    for i, core in enumerate(("cpu0", "cpu1")):
        if core not in c0 or core not in c1:
            continue
        busy = (c1[core][0] - c0[core][0]) / CLK_TCK
        steal = (c1[core][1] - c0[core][1]) / CLK_TCK
        known = k1[i] - k0[i]
        foreign = max(0.0, busy - known)
        share = foreign / wall if wall else 0.0
        worst = max(worst, share, steal / wall if wall else 0.0)
        out[f"core{i}"] = {
            "busy_s": round(busy, 2),
            "benchmark_s": round(known, 2),
            "foreign_s": round(foreign, 2),
            "foreign_share": round(share, 3),
            "steal_share": round(steal / wall, 3) if wall else 0.0,
        }
    out["worst_foreign"] = round(worst, 3)
    return out


def children_cpu_seconds() -> float:
    """CPU of every waited-for child of this script (wrk, loadgen runs)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# -- starting and stopping -------------------------------------------------------------------------


@dataclass
class Managed:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    seen: dict[int, int] = field(default_factory=dict)  # pid → starttime, for leftover cleanup

    @property
    def pid(self) -> int:
        return self.popen.pid

    def remember_tree(self) -> None:
        for pid in tree(self.pid):
            st = _stat(pid)
            if st is not None:
                self.seen.setdefault(pid, st[2])


class Processes:
    """Every long-running process this script starts, stopped by PID in ``stop_all``."""

    def __init__(self) -> None:
        self.items: list[Managed] = []

    def start(self, name: str, argv: list[str], cpu: str, env: dict[str, str] | None = None) -> Managed:
        LOGS.mkdir(parents=True, exist_ok=True)
        log = LOGS / f"{name}.log"
        with open(log, "wb") as fh:
            popen = subprocess.Popen(
                ["taskset", "-c", cpu, *argv],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C reaches only this script, which stops them in order
                cwd=REPO_ROOT,
            )
        m = Managed(name, popen, log)
        self.items.append(m)
        return m

    def stop(self, m: Managed, timeout_s: float = 30.0) -> dict[str, Any]:
        """SIGTERM the process, wait for it, then SIGKILL it and any leftover descendant."""
        m.remember_tree()
        t0 = time.perf_counter()
        if m.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(m.pid, signal.SIGTERM)
        killed = False
        try:
            m.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(m.pid, signal.SIGKILL)
            m.popen.wait(timeout=10)
        took = time.perf_counter() - t0
        # Descendants seen while it ran, plus anything still in its session (it was started in a
        # session of its own, so a worker spawned late or orphaned is found there too).
        for pid in session_members(m.pid):
            st = _stat(pid)
            if st is not None:
                m.seen.setdefault(pid, st[2])
        leftovers = []
        deadline = time.monotonic() + 5
        for pid, started in m.seen.items():
            while True:
                st = _stat(pid)
                if st is None or st[2] != started:
                    break
                if time.monotonic() > deadline:
                    leftovers.append(pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        if m in self.items:
            self.items.remove(m)
        return {
            "exit_code": m.popen.returncode,
            "stop_s": round(took, 2),
            "sigkill": killed,
            "leftover_pids_killed": leftovers,
        }

    def stop_all(self) -> None:
        for m in reversed(list(self.items)):
            try:
                self.stop(m, timeout_s=20)
            except Exception as exc:  # keep stopping the others
                print(f"warning: stopping {m.name} (pid {m.pid}) failed: {exc}", file=sys.stderr)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def wait_healthy(url: str, proc: Managed, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode} during startup; see {proc.log}:\n"
                + proc.log.read_text(errors="replace")[-3000:]
            )
        with contextlib.suppress(OSError):
            status, _, body = http("GET", url)
            if status == 200 and b'"ok"' in body:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} did not become healthy at {url} within {timeout_s:.0f}s")
