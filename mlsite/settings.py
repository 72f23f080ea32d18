"""Django settings, read from the environment; the README lists every variable."""

import logging
import os
import re
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue
from redis.connection import parse_url as parse_redis_url

BASE_DIR = Path(__file__).resolve().parent.parent
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    return default if raw is None else [item.strip() for item in raw.split(",") if item.strip()]


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate, checked here: DRF reads it per request, so a bad one answered 500.
    DRF goes by the period's first letter ("100/minutes" is per minute), and so do we."""
    raw = env_str(name, default)
    if not re.fullmatch(r"[0-9]+/[smhd][a-z]*", raw):
        raise ImproperlyConfigured(
            f"{name} must be a count per second, minute, hour or day (30/minute), got {raw!r}"
        )
    return raw


def database_from_url(name: str, url: str) -> dict:
    try:
        config = environ.Env.db_url_config(url)
    except Exception as exc:  # django-environ raises several kinds for a bad URL
        raise ImproperlyConfigured(f"{name} is not a database URL: {exc}") from None
    if config.get("ENGINE") not in environ.Env.DB_SCHEMES.values():
        raise ImproperlyConfigured(f"{name} names an unknown database scheme: {url!r}")
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets readers run beside one writer; IMMEDIATE takes the write lock at BEGIN so
        # concurrent worker processes queue on busy_timeout instead of failing to upgrade.
        config["OPTIONS"] = {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        # Each new connection runs these PRAGMAs, and journal_mode takes a lock that waits
        # on busy_timeout under write load: kept connections skip that (bench/, issue 7).
        config["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60)
        test_name = os.environ.get("TEST_SQLITE_NAME")
        if test_name:  # a file, so that worker processes started by tests see the same rows
            config["TEST"] = {"NAME": test_name}
    else:
        config["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60)
        config["CONN_HEALTH_CHECKS"] = True
    return config


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "insecure-dev-only-key"  # noqa: S105 - only ever used with DEBUG on
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
ARTIFACT_ROOT = Path(env_str("ARTIFACT_ROOT", str(BASE_DIR / "models")))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "django_celery_results",
    "django_celery_beat",
    "drf_spectacular",
    "mlsite",
    "modelregistry",
    "predictions",
]

MIDDLEWARE = [
    "mlsite.api.length_required",  # before anything reads a body Django cannot read
    "mlsite.api.json_not_found",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "mlsite.unavailable.DatabaseUnavailableMiddleware",  # 503, not 500, while it is away
]

ROOT_URLCONF = "mlsite.urls"
WSGI_APPLICATION = "mlsite.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": database_from_url(
        "DATABASE_URL", env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_TZ = True
# English only: no translations ship, and with this on, anyone could make the process load
# and keep one more catalogue per ?lang= value sent to the schema view.
USE_I18N = False

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(ARTIFACT_ROOT)},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Request and upload limits: a body over DATA_UPLOAD_MAX_MEMORY_SIZE is refused (413);
# files above FILE_UPLOAD_MAX_MEMORY_SIZE stream to disk instead of memory.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BYTES", 10 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "mlsite.uploads.MemoryFileUploadHandler",
    "mlsite.uploads.TemporaryFileUploadHandler",
]
FILE_UPLOAD_TEMP_DIR = str(ARTIFACT_ROOT / "uploading")
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 512 * 1024 * 1024)
MAX_ARTIFACT_BYTES = env_int("MAX_ARTIFACT_BYTES", 200 * 1024 * 1024)
# An uploaded artifact is read in a child process that may use this much memory at most.
MAX_ARTIFACT_MEMORY_BYTES = env_int("MAX_ARTIFACT_MEMORY_BYTES", 4 * 1024**3)
if MAX_ARTIFACT_MEMORY_BYTES < 1024**3:  # its Python with scikit-learn takes ~600 MB of it
    raise ImproperlyConfigured(
        f"MAX_ARTIFACT_MEMORY_BYTES must be at least 1 GiB (1073741824), got "
        f"{MAX_ARTIFACT_MEMORY_BYTES}: the process that reads an upload starts at about 600 MB"
    )
MAX_INLINE_ROWS = env_int("MAX_INLINE_ROWS", 1000)
MAX_FILE_ROWS = env_int("MAX_FILE_ROWS", 20_000_000)
# Every metric is a column and a chart on each admin page of its model's versions.
MAX_METRICS = env_int("MAX_METRICS", 50)  # most metrics on one version
MAX_METRIC_NAME_LENGTH = env_int("MAX_METRIC_NAME_LENGTH", 100)
BATCH_CHUNK_ROWS = env_int("BATCH_CHUNK_ROWS", 100_000, minimum=1)
MODEL_CACHE_SIZE = env_int("MODEL_CACHE_SIZE", 8)
WORKER_NATIVE_THREADS = env_int("WORKER_NATIVE_THREADS", 1, minimum=1)  # BLAS/OpenMP threads
MAX_WAIT_SECONDS = env_int("MAX_WAIT_SECONDS", 30)
# Model references and API tokens are cached per process, dropped everywhere when they change
# (mlsite/freshcache.py); this bounds how long a change Redis could not announce goes unseen.
FRESH_CACHE_SECONDS = env_float("FRESH_CACHE_SECONDS", 30.0)
UNPICKLE_EXTRA_ALLOWED = env_list("UNPICKLE_EXTRA_ALLOWED", [])
RESULT_RETENTION_DAYS = env_int("RESULT_RETENTION_DAYS", 30)
RETENTION_BATCH_SIZE = env_int("RETENTION_BATCH_SIZE", 500, minimum=1)
METRICS_TOKEN = env_str("METRICS_TOKEN", "")  # when set, /metrics wants "Bearer <token>"
# Prediction jobs: micro-batching of single jobs, leases and the reconciler (issue 4 and 6).
PREDICT_FLUSH_EVERY = env_int("PREDICT_FLUSH_EVERY", 128, minimum=1)  # jobs per micro-batch
PREDICT_FLUSH_INTERVAL = env_float("PREDICT_FLUSH_INTERVAL", 0.01)  # seconds a lone job waits
PREDICT_FLUSHES_AT_ONCE = env_int("PREDICT_FLUSHES_AT_ONCE", 1, minimum=1)  # scored at once
MAX_JSON_RESULT_ROWS = env_int("MAX_JSON_RESULT_ROWS", 100_000)  # larger results: csv/parquet
RECONCILE_INTERVAL = env_float("RECONCILE_INTERVAL", 30.0)
RECONCILE_QUEUED_AFTER = env_int("RECONCILE_QUEUED_AFTER", 60)  # re-send a job queued this long
MAX_ATTEMPTS = env_int("MAX_ATTEMPTS", 3)  # then a lost job fails with worker_lost

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6390/0")
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"REDIS_URL must be a redis:// URL, got {REDIS_URL!r}")
try:  # a bad port: web took Redis for away (jobs queued, never sent), workers did not start
    parse_redis_url(REDIS_URL)
except ValueError as exc:
    raise ImproperlyConfigured(f"REDIS_URL is not a Redis URL: {exc}") from None
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 2.0)
# After a failed send, the API skips the broker this long (the job stays queued and the
# reconciler sends it), so a Redis outage costs one timeout, not one per request.
BROKER_RETRY_AFTER = env_float("BROKER_RETRY_AFTER", 5.0)
MAX_JSON_DEPTH = env_int("MAX_JSON_DEPTH", 32)  # deeper request bodies are refused (400)

# Password checks per client address (an API token, the admin's and the browsable API's
# sign-in, together): what slows guessing.
LOGIN_THROTTLE_RATE = env_rate("LOGIN_THROTTLE_RATE", "30/minute")

# Proxies in front of web that set X-Forwarded-For and X-Forwarded-Proto (a TLS proxy: 1).
# Their headers are trusted only then: the address a throttle counts is the client's, not
# the proxy's, and a request the proxy took over TLS is secure. Straight from clients (0),
# those headers are anyone's to send.
# DRF picks the client's address from X-Forwarded-For by it: -1 was an IndexError, a 500.
PROXY_COUNT = env_int("PROXY_COUNT", 0, minimum=0)

REST_FRAMEWORK = {
    "NUM_PROXIES": PROXY_COUNT,  # DRF's default, None, trusts X-Forwarded-For from anyone
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "mlsite.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "mlsite.queryparams.PageNumbers",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "mlsite.queryparams.FormatNegotiation",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["mlsite.queryparams.ListFilters"],
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    # A short window: DRF keeps (and pickles, on every request) one timestamp per request in
    # the window, so "100000/hour" cost a heavy user milliseconds per request.
    "DEFAULT_THROTTLE_RATES": {"user": env_rate("API_THROTTLE_RATE", "1000/second")},
    "EXCEPTION_HANDLER": "mlsite.api.api_exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "mlsite.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ML prediction queue API",
    "DESCRIPTION": (
        "Submit prediction jobs against registered scikit-learn models, poll them, cancel "
        "them and download their results; manage model versions and training. Every error "
        "answers with the Error shape: a human `detail`, a stable `code`, and `field` when "
        "one input field is to blame."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "tokenAuth": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": 'Send "Authorization: Token <key>"; POST /api/v1/auth/token/.',
            }
        }
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "mlsite.schema.add_error_responses",
    ],
    # Jobs and training runs share one set of statuses, and so one enum.
    "ENUM_NAME_OVERRIDES": {
        "StatusEnum": "predictions.models.Status",
        "StageEnum": "modelregistry.models.Stage",
    },
}

# Celery: every task has a hard time limit, and Redis's visibility timeout sits above the
# longest of them, so an unacked message is only redelivered once its worker is surely dead.
# The soft limit is 30 s less: at 20, one of -10 s stopped every task at once.
TASK_TIME_LIMIT = env_int("TASK_TIME_LIMIT", 900, minimum=31)
VISIBILITY_TIMEOUT = env_int("VISIBILITY_TIMEOUT", TASK_TIME_LIMIT * 2)
if VISIBILITY_TIMEOUT <= TASK_TIME_LIMIT:
    raise ImproperlyConfigured("VISIBILITY_TIMEOUT must be larger than TASK_TIME_LIMIT")
_redis_transport = {
    "visibility_timeout": VISIBILITY_TIMEOUT,
    "socket_timeout": REDIS_SOCKET_TIMEOUT,
    "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
    "retry_on_timeout": True,
    "max_retries": 3,
}
CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_TRANSPORT_OPTIONS = _redis_transport
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_SOCKET_TIMEOUT
# One quick retry when publishing: with Redis down the API answers within ~2 socket timeouts
# (Celery's default, 3 retries, holds a request for 8 s against a Redis that hangs).
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.1,
}
# django-celery-results' backend, retrying a connection the database closed (a restart) and
# never letting a revoked task's row stop a worker (mlsite/results.py).
CELERY_RESULT_BACKEND = "mlsite.results:DatabaseBackend"
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
CELERY_RESULT_BACKEND_MAX_RETRIES = 3
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = _redis_transport
CELERY_RESULT_EXTENDED = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_TIME_LIMIT = TASK_TIME_LIMIT
CELERY_TASK_SOFT_TIME_LIMIT = TASK_TIME_LIMIT - 30
CELERY_TASK_TRACK_STARTED = True
# Celery's Django fixup closes every database connection before and after each task unless
# this is set: a new connection per micro-batch cost a fifth of the worker's time (bench/).
# With it, mlsite.celery closes them as Django does after a request: on error or age.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 1)
# A task running when the broker connection drops carries on: its claim keeps a second copy
# of its message from running it again, and what it writes is the database's. (True killed
# each running chunk, whose redelivered message then found it claimed and skipped it, so a
# Redis restart left a batch job to its lease: 16 minutes.) Celery warns on connection loss
# that 6.0 will make True the default; this setting keeps False then too.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_WORKER_SEND_TASK_EVENTS = True
# The task-sent event is one more Redis publish per job on the web request's path (bench/):
# off by default. Flower and `celery events` still see every task from the worker's events.
CELERY_TASK_SEND_SENT_EVENT = env_bool("CELERY_TASK_SEND_SENT_EVENT", False)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = [Queue(name) for name in ("predict", "batch", "training", "default")]
CELERY_TASK_ROUTES = {
    "predictions.tasks.score_single_jobs": {"queue": "predict"},
    "predictions.tasks.score_single_job_alone": {"queue": "predict"},
    # On the workers whose tasks take milliseconds: on `default` its runs waited behind
    # long batch chunks, expired, and lost jobs waited with them.
    "predictions.tasks.reconcile_jobs": {"queue": "predict"},
    "predictions.tasks.run_batch_job": {"queue": "batch"},
    "predictions.tasks.score_batch_chunk": {"queue": "batch"},
    "modelregistry.tasks.*": {"queue": "training"},
}
CELERY_BEAT_SCHEDULER = "mlsite.scheduler.HeartbeatScheduler"
CELERY_BEAT_SCHEDULE = {
    "reconcile-prediction-jobs": {
        "task": "predictions.tasks.reconcile_jobs",
        "schedule": RECONCILE_INTERVAL,
        "options": {"expires": RECONCILE_INTERVAL},
    },
    "purge-expired-results": {  # result retention (RESULT_RETENTION_DAYS)
        "task": "mlsite.tasks.purge_expired_results",
        "schedule": env_float("RETENTION_INTERVAL", 3600.0),
    },
}
# A running job's lease: renewed per batch chunk; a chunk cannot outlive the time limit,
# so a lease that expires means its worker is gone.
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", TASK_TIME_LIMIT + 60)
# A single job's lease is short: the process scoring it renews it every third of it while the
# micro-batch runs (predictions/heartbeat.py), so one whose process died is re-run this soon.
SINGLE_JOB_LEASE_SECONDS = env_float("SINGLE_JOB_LEASE_SECONDS", 90.0)
# A batch chunk's lease, renewed the same way while it scores (the job's own lease stays
# JOB_LEASE_SECONDS: its chunks may wait in the queue behind other jobs' chunks).
CHUNK_LEASE_SECONDS = env_float("CHUNK_LEASE_SECONDS", 90.0)
# A training run's lease, renewed the same way while it trains; one whose worker died fails
# about this long after, and the spec may run again.
TRAINING_LEASE_SECONDS = env_float("TRAINING_LEASE_SECONDS", 90.0)
CELERY_TIMEZONE = TIME_ZONE

# Every line carries job_id and task_id ("-" when it is about no job); LOG_FORMAT=json
# writes one JSON object per line for log shippers.
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()  # as Celery's --loglevel, any case
if LOG_LEVEL not in logging.getLevelNamesMapping():  # else "Unable to configure root logger"
    raise ImproperlyConfigured(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"job_context": {"()": "mlsite.logs.JobContextFilter"}},
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [job=%(job_id)s task=%(task_id)s] "
            "%(message)s"
        },
        "json": {"()": "mlsite.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["job_context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's default config gives "django" a console handler of its own (under DEBUG),
        # which printed each line a second time, unformatted, beside the root's.
        "django": {"handlers": []},
        "django.db.backends": {"level": "WARNING"},
    },
}

if not DEBUG:
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if PROXY_COUNT:
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
