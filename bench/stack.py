"""The stack a benchmark runs against: its own Redis, database, gunicorn and Celery worker.

Everything lives under var/bench/<name>/ and is made afresh on each run. The database is a
SQLite file there, or the PostgreSQL named by BENCH_DATABASE_URL (dropped and re-created).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BENCH_USER = "bench"

# The service configuration the benchmarks measure; each can be overridden from the
# environment of the bench command (the README lists them).
WEB_WORKERS = int(os.environ.get("BENCH_WEB_WORKERS", "2"))
WEB_THREADS = int(os.environ.get("BENCH_WEB_THREADS", "16"))
WORKER_CONCURRENCY = int(os.environ.get("BENCH_WORKER_CONCURRENCY", "2"))
WORKER_POOL = os.environ.get("BENCH_WORKER_POOL", "prefork")
PREFETCH_MULTIPLIER = os.environ.get("BENCH_PREFETCH_MULTIPLIER", "64")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # noqa: S110 - the thing we wait for may raise until it is up
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _reset_postgres(url: str) -> None:
    import psycopg

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def tree_cpu(pid: int) -> float:
    """User + system seconds of a process and its descendants (live ones), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(tree_cpu(int(child)) for child in children)


class Stack(AbstractContextManager):
    """Redis, a migrated database with a staff user, gunicorn and one Celery worker."""

    def __init__(self, name: str, *, worker_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.dir = ROOT / "var" / "bench" / name
        self.redis_port = free_port()
        self.web_port = free_port()
        self.worker_env = worker_env or {}
        self.database_url = os.environ.get("BENCH_DATABASE_URL", "")
        self.processes: list[subprocess.Popen] = []
        self.worker: subprocess.Popen | None = None
        self.web: subprocess.Popen | None = None
        self.token = ""

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def database(self) -> str:
        return "postgresql" if self.database_url.startswith("postgres") else "sqlite"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DEBUG="0",
            SECRET_KEY="bench-only-secret-key",
            SECURE_COOKIES="0",
            REDIS_URL=self.redis_url,
            DATABASE_URL=self.database_url or f"sqlite:///{self.dir / 'db.sqlite3'}",
            ARTIFACT_ROOT=str(self.dir / "models"),
            LOG_LEVEL="WARNING",
            CELERY_WORKER_PREFETCH_MULTIPLIER=PREFETCH_MULTIPLIER,
        )
        env.pop("TEST_SQLITE_NAME", None)
        env.update(extra)
        return env

    def __enter__(self) -> "Stack":
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "models").mkdir(parents=True)
        if self.database_url:
            _reset_postgres(self.database_url)
        try:
            self._start_redis()
            self._migrate()
            self._start_web()
            self.worker = self.start_worker(**self.worker_env)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in reversed(self.processes):
            stop(process)
        self.processes.clear()

    def _spawn(self, args: list[str], env: dict[str, str], log: str) -> subprocess.Popen:
        with open(self.dir / log, "ab") as out:
            process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=out)
        self.processes.append(process)
        return process

    def _start_redis(self) -> None:
        import redis

        args = ["bash", "scripts/redis-server.sh", str(self.redis_port), str(self.dir / "redis")]
        self._spawn([*args, "--appendonly", "no"], self.env(), "redis.log")
        wait_for(redis.Redis(port=self.redis_port).ping, 10, "redis")

    def _migrate(self) -> None:
        manage = [PYTHON, "manage.py"]
        subprocess.run(
            [*manage, "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=self.env(), check=True
        )
        script = (
            "from django.contrib.auth.models import User\n"
            "from rest_framework.authtoken.models import Token\n"
            f"user = User.objects.create_superuser({BENCH_USER!r}, 'bench@example.com', 'x')\n"
            "print(Token.objects.create(user=user).key)\n"
        )
        done = subprocess.run(
            [*manage, "shell", "-c", script],
            cwd=ROOT,
            env=self.env(),
            check=True,
            capture_output=True,
            text=True,
        )
        self.token = done.stdout.strip().splitlines()[-1]

    def _start_web(self) -> None:
        args = [PYTHON, "-m", "gunicorn", "mlsite.wsgi", "--no-control-socket"]
        args += ["--bind", f"127.0.0.1:{self.web_port}"]
        args += ["--workers", str(WEB_WORKERS), "--threads", str(WEB_THREADS)]
        args += ["--log-level", "warning", "--backlog", "256"]
        self.web = self._spawn(args, self.env(), "web.log")
        address = ("127.0.0.1", self.web_port)
        wait_for(lambda: socket.create_connection(address, 0.5).close() or True, 30, "web")

    def start_worker(self, queues: str = "predict,batch", **extra: str) -> subprocess.Popen:
        """A worker process with the bench's pool size; returns once it answers a ping."""
        name = f"bench-{free_port()}@%h"
        args = [PYTHON, "-m", "celery", "-A", "mlsite", "worker", "-Q", queues, "-n", name]
        args += ["--concurrency", str(WORKER_CONCURRENCY), "--pool", WORKER_POOL]
        args += ["--loglevel", "WARNING", "--without-mingle", "--without-gossip"]
        args += ["--without-heartbeat"]
        process = self._spawn(args, self.env(**extra), "worker.log")
        hostname = name.replace("%h", socket.gethostname())
        wait_for(lambda: self._pings(hostname, process), 60, f"worker {hostname}")
        return process

    def _pings(self, hostname: str, process: subprocess.Popen) -> bool:
        from celery import Celery

        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}")
        control = Celery(broker=self.redis_url, set_as_current=False)
        return bool(control.control.ping([hostname], timeout=0.5))

    @contextmanager
    def profiled(self, label: str) -> Iterator[None]:
        """With BENCH_PROFILE=1, py-spy samples the worker and web processes meanwhile.

        BENCH_PROFILE=gil samples only threads holding the GIL (Python's own CPU time, not
        waits); BENCH_PROFILE_RATE sets the samples a second (200). Collapsed stacks land in
        var/bench/<name>/profile-<label>-<process>.txt.
        """
        mode = os.environ.get("BENCH_PROFILE", "")
        if mode not in ("1", "gil"):
            yield
            return
        spies = []
        for process, what in ((self.worker, "worker"), (self.web, "web")):
            assert process is not None
            out = self.dir / f"profile-{label}-{what}.txt"
            args = ["py-spy", "record", "--pid", str(process.pid), "--subprocesses"]
            rate = os.environ.get("BENCH_PROFILE_RATE", "200")  # samples a second
            args += ["--format", "raw", "--rate", rate, "--output", str(out), "--nonblocking"]
            args += ["--gil"] if mode == "gil" else []
            spies.append(subprocess.Popen([str(Path(PYTHON).parent / args[0]), *args[1:]]))
        try:
            yield
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by each part of the stack (a process and its children)."""
        parts = {"web": self.web, "worker": self.worker, "redis": self.processes[0]}
        return {part: tree_cpu(p.pid) for part, p in parts.items() if p is not None}

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"} if self.token else {}

    def worker_children(self) -> list[int]:
        """The pool processes of the worker (the ones that load models and score)."""
        assert self.worker is not None
        path = Path(f"/proc/{self.worker.pid}/task/{self.worker.pid}/children")
        return [int(pid) for pid in path.read_text().split()]
