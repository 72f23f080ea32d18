"""Real processes for integration tests: Redis servers, Celery workers, beat, the web server.

Each runs as its own OS process against the test database (a SQLite file or the PostgreSQL
test database), so what they do is what a deployment does.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from celery import Celery
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ALL_QUEUES = ("predict", "batch", "training", "default")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    """The URL of the database pytest-django created, for processes we start."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgresql://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def process_env(redis_url: str | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = test_database_url()
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


def run_python(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The project's Python run with `args` in the project's directory; output kept as text."""
    return subprocess.run(
        [PYTHON, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def wait_for(condition, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # noqa: S110 - the thing we wait for may raise until it is up
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def dump_stacks(*processes: subprocess.Popen) -> str:
    """What each process (and its children) is doing now, from py-spy, for a failure report."""
    py_spy = str(Path(PYTHON).parent / "py-spy")
    dumps = []
    for process in processes:
        args = [py_spy, "dump", "--subprocesses", "--pid", str(process.pid)]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=30)
            dumps.append(done.stdout + done.stderr)
        except (OSError, subprocess.TimeoutExpired) as error:
            dumps.append(f"py-spy dump of {process.pid} failed: {error}")
    return "\n".join(dumps)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RedisServer:
    """A Redis of the test's own, on a free port, that the test may stop and start again."""

    def __init__(self, data_dir: Path, appendonly: bool = True) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.appendonly = appendonly
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["bash", str(ROOT / "scripts/redis-server.sh"), str(self.port), str(self.data_dir)]
        args += ["--appendonly", "yes" if self.appendonly else "no", "--loglevel", "warning"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        wait_for(client.ping, 10, f"redis on {self.port}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop(self.process, sig)
            self.process = None


@contextmanager
def redis_server(data_dir: Path, appendonly: bool = True) -> Iterator[RedisServer]:
    server = RedisServer(data_dir, appendonly)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def start_worker(
    redis_url: str | None = None,
    queues: tuple[str, ...] = ALL_QUEUES,
    concurrency: int = 2,
    name: str | None = None,
    extra_args: tuple[str, ...] = (),
    **env: str,
) -> subprocess.Popen:
    name = name or f"test-{free_port()}@%h"
    args = [PYTHON, "-m", "celery", "-A", "mlsite", "worker", "-Q", ",".join(queues)]
    args += ["--concurrency", str(concurrency), "-n", name, "--loglevel", "WARNING"]
    args += ["--without-mingle", "--without-gossip", *extra_args]
    process = subprocess.Popen(args, cwd=ROOT, env=process_env(redis_url, **env))
    try:
        _wait_for_worker(process, redis_url, name)
    except BaseException:
        stop(process, signal.SIGKILL)
        raise
    return process


def control_app(redis_url: str | None = None) -> Celery:
    """A Celery app for remote control on the given broker (ping replies need its own app)."""
    from mlsite.celery import app

    return Celery(broker=redis_url, set_as_current=False) if redis_url else app


def _wait_for_worker(process: subprocess.Popen, redis_url: str | None, name: str) -> None:
    hostname = name.replace("%h", socket.gethostname())
    control = control_app(redis_url)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}")
        return bool(control.control.ping([hostname], timeout=0.5))

    wait_for(answers, 60, f"worker {hostname}")


@contextmanager
def celery_worker(**kwargs) -> Iterator[subprocess.Popen]:
    process = start_worker(**kwargs)
    try:
        yield process
    finally:
        stop(process)


def start_beat(redis_url: str | None = None, **env: str) -> subprocess.Popen:
    args = [PYTHON, "-m", "celery", "-A", "mlsite", "beat", "--loglevel", "WARNING"]
    args += ["--pidfile=", "--max-interval", "1"]
    return subprocess.Popen(args, cwd=ROOT, env=process_env(redis_url, **env))


def start_web(port: int, redis_url: str | None = None, **env: str) -> subprocess.Popen:
    args = [PYTHON, "-m", "gunicorn", "mlsite.wsgi", "--no-control-socket"]
    args += ["--bind", f"127.0.0.1:{port}"]
    args += ["--workers", "1", "--threads", "8", "--log-level", "warning"]
    process = subprocess.Popen(args, cwd=ROOT, env=process_env(redis_url, **env))
    try:
        wait_for(
            lambda: socket.create_connection(("127.0.0.1", port), 0.5).close() or True, 30, "web"
        )
    except BaseException:
        stop(process, signal.SIGKILL)
        raise
    return process
