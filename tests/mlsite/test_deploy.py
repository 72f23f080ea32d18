"""docker-compose.yml, the Dockerfile and the WSGI entry point describe the stack the settings
expect.

No Docker engine runs in CI, so these read the files: the services, persistence, shared
storage, that the settings module accepts the environment compose gives it, and what a web
process has loaded before its first request.
"""

import re
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from tests.processes import ROOT, run_python

APP_SERVICES = ("web", "predict", "worker", "beat", "flower")
WORKERS = ("predict", "worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def interpolated(value: str) -> str:
    """Compose's ${NAME:-default} and ${NAME:?error}, with sample values for required ones."""
    samples = {"SECRET_KEY": "compose-check-key", "POSTGRES_PASSWORD": "pw"}

    def one(match: re.Match) -> str:
        name, op, rest = match["name"], match["op"], match["rest"]
        return samples.get(name, "") if op == ":?" else rest

    return re.sub(r"\$\{(?P<name>\w+)(?P<op>:-|:\?)(?P<rest>[^}]*)\}", one, value)


def test_compose_runs_the_whole_stack(compose: dict) -> None:
    assert set(compose["services"]) == {"postgres", "redis", *APP_SERVICES}
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["image"] == "mlsite:latest" and service["build"] == "."
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "artifacts:/data/models" in service["volumes"]


def test_redis_and_postgres_keep_their_data(compose: dict) -> None:
    redis = compose["services"]["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    postgres = compose["services"]["postgres"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert set(compose["volumes"]) == {"postgres", "redis", "artifacts"}


def worker_options(command: str) -> tuple[list[str], str]:
    """The queues a `celery worker` command consumes and its prefetch multiplier."""
    queues = re.search(r"-Q (\S+)", command)[1].split(",")
    prefetch = re.search(r"--prefetch-multiplier (\S+)", command)
    return queues, prefetch[1] if prefetch else "the default"


def test_the_workers_consume_every_queue_the_settings_route_to_once(compose: dict) -> None:
    queues = [
        queue
        for name in WORKERS
        for queue in worker_options(compose["services"][name]["command"])[0]
    ]
    assert sorted(queues) == sorted(queue.name for queue in settings.CELERY_TASK_QUEUES)
    assert "beat" in compose["services"]["beat"]["command"]
    assert "flower" in compose["services"]["flower"]["command"]
    assert compose["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${")


def test_the_workers_are_split_as_make_run_splits_them(compose: dict) -> None:
    """Micro-batches gather only what a worker has reserved: the predict worker needs a deep
    prefetch, while the batch and training worker keeps 1 so no process hoards long tasks."""
    procfile = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    for name in WORKERS:
        command = compose["services"][name]["command"]
        assert worker_options(command) == worker_options(procfile[name]), name
    assert worker_options(procfile["predict"]) == (["predict"], "${PREDICT_PREFETCH:-64}")


def test_the_reconciler_runs_where_long_batch_chunks_cannot_hold_it_up() -> None:
    # On the batch worker's queue its runs waited behind chunks and expired (a tester saw
    # 13-16 s between runs of a 3 s interval), and lost single jobs waited with them.
    routes = settings.CELERY_TASK_ROUTES
    assert routes["predictions.tasks.reconcile_jobs"]["queue"] == "predict"
    assert routes["predictions.tasks.score_batch_chunk"]["queue"] != "predict"


def test_the_settings_accept_the_environment_compose_gives_them(compose: dict) -> None:
    env = {
        key: interpolated(str(value))
        for key, value in compose["services"]["web"]["environment"].items()
    }
    assert env["DATABASE_URL"].startswith("postgresql://mlsite:pw@postgres:5432/")
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.REDIS_URL, s.DEBUG, s.LOG_FORMAT)"
    )
    env["PATH"] = "/usr/bin:/bin"
    env["DJANGO_SETTINGS_MODULE"] = "mlsite.settings"
    out = run_python(["-c", code], env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "django.db.backends.postgresql",
        "redis://redis:6379/0",
        "False",
        "json",
    ]


def test_the_image_runs_gunicorn_on_the_python_the_project_is_tested_with() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"FROM python:{version}-slim" in dockerfile
    assert "pip install -r requirements.txt" in dockerfile
    assert '"gunicorn", "mlsite.wsgi"' in dockerfile
    assert "USER app" in dockerfile


def test_a_web_process_loads_every_view_before_its_first_request(tmp_path: Path) -> None:
    """Else the first request to each gunicorn process imports them (0.2 s, more under load),
    and gc.freeze() in mlsite.wsgi leaves them to the collector's full passes."""
    code = (
        "import gc, sys; import mlsite.wsgi; "
        "print('predictions.api.views' in sys.modules, 'rest_framework.renderers' in sys.modules, "
        "gc.get_freeze_count() > 0)"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "mlsite.settings",
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "ARTIFACT_ROOT": str(tmp_path / "models"),
    }
    out = run_python(["-c", code], env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]


def test_no_two_web_servers_share_gunicorns_control_socket(compose: dict) -> None:
    # gunicorn 27 opens one at ~/.gunicorn/gunicorn.ctl unless told not to: `make run`, the
    # tests' and the benchmarks' stacks on one machine took it from each other.
    procfile = (ROOT / "Procfile").read_text()
    web_lines = [line for line in procfile.splitlines() if line.startswith("web:")]
    for command in (*web_lines, compose["services"]["web"]["command"]):
        assert "--no-control-socket" in command
