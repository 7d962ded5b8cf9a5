"""What the benchmarks read off the machine: a process's CPU time, memory and children (psutil),
the CPU model, the revision of the code."""

import platform
import subprocess
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def process_cpu(pid: int) -> float:
    """CPU seconds a process has used (user + system, not its children's); 0 once it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of a process's main thread (a replica's event loop: its other threads are the
    history writer's and the pool's that look tokens up); 0 once it is gone."""
    try:
        threads = psutil.Process(pid).threads()
    except psutil.NoSuchProcess:
        return 0.0
    return sum(t.user_time + t.system_time for t in threads if t.id == pid)


def process_rss(pid: int) -> int:
    """Resident memory of a process in bytes; raises ProcessLookupError once it is gone."""
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.NoSuchProcess:
        raise ProcessLookupError(f"no process {pid}") from None


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (nginx's workers, say); none once it is gone."""
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def git_revision() -> str:
    """The checked-out commit, marked -dirty if tracked files differ from it."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    revision = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    return revision + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def cpu_model() -> str:
    """The CPU's marketing name. psutil does not give it, so it comes from /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()
