"""The Python client and `manage.py predict` score a CSV through a real web server and worker."""

import argparse
import csv
import io
import os
import signal
import socket
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from predictions.client import CHUNK, ApiError, Client, JobFailed, build_parser, main, run
from predictions.management.commands.predict import Command as PredictCommand
from predictions.models import PredictionJob, Status
from tests import processes
from tests.base import make_user
from tests.builders import IRIS_FEATURES, in_process_predictions, iris_rows, make_version


def write_csv(path: Path, rows: list[dict[str, float]], with_id: bool = True) -> Path:
    with path.open("w", newline="") as stream:
        columns = (["row_id"] if with_id else []) + IRIS_FEATURES
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        for number, row in enumerate(rows):
            writer.writerow({"row_id": f"r{number}", **row} if with_id else row)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.fixture
def token(db) -> str:
    return Token.objects.create(user=make_user("client-user")).key


@pytest.mark.django_db(transaction=True)
def test_the_client_submits_a_csv_waits_and_saves_the_result(
    live_web: str, live_worker, token: str, tmp_path: Path
) -> None:
    version = make_version()
    rows = iris_rows(40)
    seen: list[str] = []
    client = Client(live_web, token)

    job = client.predict_file(
        "iris",
        write_csv(tmp_path / "rows.csv", rows),
        tmp_path / "result.csv",
        id_column="row_id",
        timeout=60,
        on_progress=lambda state: seen.append(state.status),
    )

    assert job.status == "succeeded" and job.rows_done == 40
    assert seen[-1] == "succeeded"
    result = read_csv(tmp_path / "result.csv")
    assert [row["row_id"] for row in result] == [f"r{i}" for i in range(40)]
    expected = in_process_predictions(version, rows)
    assert [int(float(row["prediction"])) for row in result] == list(expected)


@pytest.mark.django_db(transaction=True)
def test_the_client_reports_an_unknown_model_with_its_error_code(
    live_web: str, token: str, tmp_path: Path
) -> None:
    make_version()
    with pytest.raises(ApiError) as refused:
        Client(live_web, token).submit_file("no-such-model", write_csv(tmp_path / "r.csv", []))
    assert refused.value.status == 404
    assert refused.value.code == "unknown_model"


@pytest.mark.django_db(transaction=True)
def test_the_predict_command_shows_progress_and_saves_the_result(
    live_web: str, live_worker, token: str, tmp_path: Path, monkeypatch
) -> None:
    make_version()
    monkeypatch.setenv("MLSITE_TOKEN", token)  # the token from the environment
    out, err = io.StringIO(), io.StringIO()
    rows_csv = write_csv(tmp_path / "rows.csv", iris_rows(25), with_id=False)

    call_command(
        "predict",
        "--model=iris",
        f"--file={rows_csv}",
        f"--out={tmp_path / 'result.csv'}",
        f"--url={live_web}",
        stdout=out,
        stderr=err,
    )

    assert len(read_csv(tmp_path / "result.csv")) == 25
    assert "100%" in err.getvalue().splitlines()[-1]
    assert "succeeded" in err.getvalue()
    job = PredictionJob.objects.get()
    assert job.status == Status.SUCCEEDED
    assert f"job {job.pk}: 25 rows scored by iris:1" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_the_predict_command_saves_the_rows_it_could_not_score_with_their_reasons(
    live_web: str, live_worker, token: str, tmp_path: Path
) -> None:
    make_version()
    rows = iris_rows(3)
    rows[1] = {**rows[1], "sepal_width": "wide"}
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "predict",
        "--model=iris",
        f"--file={write_csv(tmp_path / 'rows.csv', rows)}",
        f"--out={tmp_path / 'result.csv'}",
        "--id-column=row_id",
        f"--url={live_web}",
        f"--token={token}",
        stdout=out,
        stderr=err,
    )

    job = PredictionJob.objects.get()
    errors = tmp_path / "result.errors.csv"
    assert out.getvalue() == (
        f"job {job.pk}: 2 of 3 rows scored by iris:1, saved {tmp_path / 'result.csv'}; "
        f"1 not scored, their reasons saved in {errors}\n"
    )
    assert "1 not scored" in err.getvalue()
    assert [row["row_id"] for row in read_csv(tmp_path / "result.csv")] == ["r0", "r2"]
    [error] = read_csv(errors)
    assert (error["row"], error["row_id"]) == ("2", "r1")
    assert "sepal_width" in error["error"]


@pytest.mark.django_db(transaction=True)
def test_the_predict_command_saves_the_reasons_when_no_row_could_be_scored(
    live_web: str, live_worker, token: str, tmp_path: Path
) -> None:
    make_version()
    rows = [{**row, "sepal_width": "wide"} for row in iris_rows(2)]
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError):
        call_command(
            "predict",
            "--model=iris",
            f"--file={write_csv(tmp_path / 'rows.csv', rows)}",
            f"--out={tmp_path / 'result.csv'}",
            "--id-column=row_id",
            f"--url={live_web}",
            f"--token={token}",
            stdout=out,
            stderr=err,
        )

    errors = tmp_path / "result.errors.csv"
    assert "failed: no_rows_scored none of the 2 rows could be scored" in err.getvalue()
    assert f"the reason for each row saved in {errors}" in err.getvalue()
    assert [row["row_id"] for row in read_csv(errors)] == ["r0", "r1"]
    assert not (tmp_path / "result.csv").exists()


@pytest.mark.django_db(transaction=True)
def test_the_predict_command_refuses_a_wrong_token(live_web: str, tmp_path: Path) -> None:
    rows_csv = write_csv(tmp_path / "rows.csv", iris_rows(2))
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command(
            "predict",
            "--model=iris",
            f"--file={rows_csv}",
            f"--out={tmp_path / 'out.csv'}",
            f"--url={live_web}",
            "--token=not-a-token",
            stderr=err,
        )
    assert "401" in err.getvalue()
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("where", ["--out", "--errors"])
@pytest.mark.django_db(transaction=True)
def test_the_predict_command_refuses_a_missing_output_directory_before_submitting(
    live_web: str, live_worker, token: str, tmp_path: Path, capsys, where: str
) -> None:
    make_version()
    missing = tmp_path / "no-such-dir" / "x.csv"
    paths = {"--out": tmp_path / "result.csv", "--errors": tmp_path / "errors.csv", where: missing}

    status = main(
        [
            "--model=iris",
            f"--file={write_csv(tmp_path / 'rows.csv', iris_rows(2), with_id=False)}",
            *(f"{option}={path}" for option, path in paths.items()),
            f"--url={live_web}",
            f"--token={token}",
        ]
    )

    assert status == 2
    assert f"{where}: no directory {missing.parent}" in capsys.readouterr().err
    assert not PredictionJob.objects.exists()  # nothing was sent to be scored


@pytest.mark.parametrize("timeout", ["-5", "0"])
def test_the_predict_command_refuses_a_timeout_that_is_not_positive(
    tmp_path: Path, capsys, timeout: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "--model=iris",
                f"--file={tmp_path / 'rows.csv'}",
                f"--out={tmp_path / 'result.csv'}",
                f"--timeout={timeout}",
                "--token=t",
            ]
        )

    assert exited.value.code == 2
    assert "--timeout: must be a positive number of seconds" in capsys.readouterr().err


def test_the_client_usage_names_the_command_that_runs_it(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m predictions.client [-h] --model")


def test_the_predict_command_usage_names_manage_py() -> None:
    usage = PredictCommand().create_parser("manage.py", "predict").format_usage()
    assert usage.startswith("usage: manage.py predict ")


@pytest.mark.django_db(transaction=True)
def test_the_predict_command_counts_lines_with_the_wrong_number_of_cells_as_rows_not_scored(
    live_web: str, live_worker, token: str, tmp_path: Path
) -> None:
    make_version()
    rows_csv = tmp_path / "rows.csv"
    rows_csv.write_text(",".join(IRIS_FEATURES) + "\n5.1,3.5,1.4,0.2\n1,2,3\n1,2,3,4,5\n6,3,5,2\n")
    out = io.StringIO()

    call_command(
        "predict",
        "--model=iris",
        f"--file={rows_csv}",
        f"--out={tmp_path / 'result.csv'}",
        f"--url={live_web}",
        f"--token={token}",
        stdout=out,
        stderr=io.StringIO(),
    )

    assert "2 of 4 rows scored" in out.getvalue()
    assert "; 2 not scored" in out.getvalue()
    errors = read_csv(tmp_path / "result.errors.csv")
    assert [(error["row"], error["error"]) for error in errors] == [
        ("2", "unreadable line: expected 4 columns, got 3"),
        ("3", "unreadable line: expected 4 columns, got 5"),
    ]


def a_closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_client_names_the_server_it_cannot_reach(tmp_path: Path, capsys) -> None:
    url = f"http://127.0.0.1:{a_closed_port()}"
    rows_csv = write_csv(tmp_path / "rows.csv", iris_rows(2), with_id=False)

    status = main(
        [
            "--model=iris",
            f"--file={rows_csv}",
            f"--out={tmp_path / 'result.csv'}",
            f"--url={url}",
            "--token=t",
        ]
    )

    assert status == 2
    error = capsys.readouterr().err
    assert f"predict: cannot reach {url}" in error  # was only "<urlopen error [Errno 111] …>"
    assert "--url" in error and "MLSITE_URL" in error


def test_the_predict_command_ends_its_failure_message_with_a_newline(
    tmp_path: Path, capsys
) -> None:
    rows_csv = write_csv(tmp_path / "rows.csv", iris_rows(2), with_id=False)
    command = PredictCommand()

    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(
            [
                "manage.py",
                "predict",
                "--model=iris",
                f"--file={rows_csv}",
                f"--out={tmp_path / 'result.csv'}",
                f"--url=http://127.0.0.1:{a_closed_port()}",
                "--token=t",
                "--skip-checks",
            ]
        )

    assert exited.value.code == 2
    # The progress bar's lines end themselves; Django's own CommandError line must still
    # end, or the shell's prompt is written after it on the same line.
    assert capsys.readouterr().err.endswith("CommandError: predict failed (exit status 2)\n")


@contextmanager
def web_on(port: int, redis_url: str) -> Iterator[subprocess.Popen]:
    web = processes.start_web(port, redis_url)
    try:
        yield web
    finally:
        processes.stop(web)


@pytest.mark.django_db(transaction=True)
def test_the_client_waits_through_a_restart_of_the_server(
    token: str, private_redis: processes.RedisServer
) -> None:
    make_version()
    port = processes.free_port()
    client = Client(f"http://127.0.0.1:{port}", token, timeout=30)
    with web_on(port, private_redis.url):  # no worker on this Redis yet: the job waits
        job = client.submit_rows("iris", iris_rows(1))
        waiting = ThreadPoolExecutor(1).submit(client.wait, job.id, timeout=90, poll=0.2)
        time.sleep(1)
    time.sleep(1)  # the server is down while the client waits
    with web_on(port, private_redis.url), processes.celery_worker(redis_url=private_redis.url):
        finished = waiting.result(timeout=90)

    assert finished.status == "succeeded"  # was URLError: connection refused, the job lost


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_while_waiting_names_the_job_that_goes_on(
    token: str, private_redis: processes.RedisServer, tmp_path: Path
) -> None:
    make_version()
    port = processes.free_port()
    rows_csv = write_csv(tmp_path / "rows.csv", iris_rows(2), with_id=False)
    with web_on(port, private_redis.url):  # no worker: the job stays queued
        command = subprocess.Popen(
            [
                *(processes.PYTHON, "-m", "predictions.client", "--model=iris"),
                *(f"--file={rows_csv}", f"--out={tmp_path / 'result.csv'}"),
                f"--url=http://127.0.0.1:{port}",
            ],
            cwd=processes.ROOT,
            env=processes.process_env(MLSITE_TOKEN=token),
            stderr=subprocess.PIPE,
            text=True,
        )
        assert command.stderr is not None
        assert command.stderr.readline().endswith("queued\n")  # the progress bar: waiting
        command.send_signal(signal.SIGINT)
        _, err = command.communicate(timeout=30)

    job = PredictionJob.objects.get()
    assert command.returncode == 130
    assert "Traceback" not in err
    assert "predict: interrupted\n" in err
    assert f"predict: job {job.pk} is on the server" in err  # was a traceback, the job unnamed
    assert f"POST http://127.0.0.1:{port}/api/v1/jobs/{job.pk}/cancel/" in err


@pytest.mark.django_db(transaction=True)
def test_a_file_over_the_upload_limit_is_refused_as_too_large_not_as_a_server_away(
    live_web: str, token: str, tmp_path: Path, capsys
) -> None:
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as stream:  # sparse: the server refuses it from its length alone
        stream.truncate(settings.MAX_UPLOAD_BYTES + CHUNK)

    status = main(
        [
            *("--model=iris", f"--file={huge}", f"--out={tmp_path / 'result.csv'}"),
            *(f"--url={live_web}", f"--token={token}"),
        ]
    )

    assert status == 2
    error = capsys.readouterr().err
    assert "413 body_too_large" in error  # was "cannot reach … (Broken pipe)"
    assert "cannot reach" not in error


def sends_part_of_a_result(
    listener: socket.socket, then: Callable[[socket.socket], None] = lambda connection: None
) -> Future[None]:
    """A server that announces a result of 10,000 bytes, sends 415 of them, then does `then`
    with the connection before it closes: the network is what we do not own."""

    def answer_in_part() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: 10000\r\n\r\n"
            connection.sendall(head + b"row,prediction\n" + b"1,0\n" * 100)
            then(connection)

    return ThreadPoolExecutor(1).submit(answer_in_part)


def test_a_download_the_connection_cuts_short_is_an_error_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    # The network is what we do not own: a server that announces a result and drops the
    # connection partway, as a restart or a broken link does.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    server = sends_part_of_a_result(listener)
    out = tmp_path / "result.csv"
    with listener, pytest.raises(ConnectionError, match=r"stopped sending result\.csv"):
        Client(f"http://127.0.0.1:{port}", "t").download_result("a-job", out)
    server.result(timeout=5)
    assert not out.exists()  # was kept, 415 of 10,000 bytes, with exit status 0


@pytest.mark.django_db(transaction=True)
def test_a_file_that_cannot_be_read_is_named_not_blamed_on_the_server(
    live_web: str, token: str, tmp_path: Path, capsys
) -> None:
    status = main(
        [
            *("--model=iris", f"--file={tmp_path}", f"--out={tmp_path / 'result.csv'}"),
            *(f"--url={live_web}", f"--token={token}"),
        ]
    )

    assert status == 2
    error = capsys.readouterr().err
    assert f"predict: [Errno 21] Is a directory: '{tmp_path}'" in error
    assert "cannot reach" not in error  # was "cannot reach … is the server running there?"


@pytest.mark.django_db(transaction=True)
def test_a_job_cancelled_while_the_client_waits_is_reported_without_an_empty_reason(
    token: str, private_redis: processes.RedisServer, tmp_path: Path
) -> None:
    make_version()
    port = processes.free_port()
    client = Client(f"http://127.0.0.1:{port}", token)
    rows_csv = write_csv(tmp_path / "rows.csv", iris_rows(2), with_id=False)
    with web_on(port, private_redis.url):  # no worker: the job stays queued until cancelled
        job = client.submit_file("iris", rows_csv)
        client.cancel(job.id)
        with pytest.raises(JobFailed) as failed:
            client.collect(job.id, tmp_path / "result.csv")

    assert str(failed.value) == f"job {job.id} cancelled"  # was "job … cancelled:  "


class Terminal(io.StringIO):
    """Standard error as a terminal, where the progress bar redraws one line."""

    def isatty(self) -> bool:
        return True


@pytest.mark.django_db(transaction=True)
def test_on_a_terminal_a_message_after_the_progress_bar_starts_a_line_of_its_own(
    token: str, private_redis: processes.RedisServer, tmp_path: Path
) -> None:
    make_version()
    port = processes.free_port()
    rows_csv = write_csv(tmp_path / "rows.csv", iris_rows(2), with_id=False)
    options = build_parser(argparse.ArgumentParser()).parse_args(
        [
            *("--model=iris", f"--file={rows_csv}", f"--out={tmp_path / 'result.csv'}"),
            *(f"--url=http://127.0.0.1:{port}", f"--token={token}", "--timeout=1"),
        ]
    )
    err = Terminal()
    with web_on(port, private_redis.url):  # no worker: the job stays queued past --timeout
        status = run(options, io.StringIO(), err)

    assert status == 2
    # was "\r[------------------------------]   0%  queuedpredict: job … still queued …"
    assert "queued\npredict: job " in err.getvalue()


def test_a_url_that_answers_but_not_in_http_is_not_reached_with_status_2(
    tmp_path: Path, capsys
) -> None:
    # A mistyped port where some other service listens (SSH here) is outside our control.
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"

    def answer_as_ssh() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    server = ThreadPoolExecutor(1).submit(answer_as_ssh)
    rows_csv = write_csv(tmp_path / "rows.csv", iris_rows(2), with_id=False)
    with listener:
        status = main(
            [
                *("--model=iris", f"--file={rows_csv}", f"--out={tmp_path / 'result.csv'}"),
                *(f"--url={url}", "--token=t"),
            ]
        )
    server.result(timeout=5)

    assert status == 2  # was a BadStatusLine traceback and status 1, "the job failed"
    assert f"predict: cannot reach {url} (BadStatusLine: SSH-2.0-OpenSSH_9.2)" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("cut", ["stalls", "resets"])
def test_a_download_cut_by_a_stall_or_a_reset_leaves_no_file(tmp_path: Path, cut: str) -> None:
    # A broken link stalls until the client's timeout; a server killed with unread data
    # resets. Either way what was saved is part of a result, as when the connection closes.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    release = threading.Event()

    def then_cut(connection: socket.socket) -> None:
        if cut == "resets":  # closing with linger 0 sends RST, not FIN
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            release.wait(10)

    server = sends_part_of_a_result(listener, then_cut)
    out = tmp_path / "result.csv"
    try:
        with listener, pytest.raises(OSError):  # TimeoutError, ConnectionResetError
            Client(f"http://127.0.0.1:{port}", "t", timeout=0.5).download_result("a-job", out)
    finally:
        release.set()
    server.result(timeout=5)
    assert not out.exists()  # was kept, 415 of 10,000 bytes


def test_a_download_cut_short_into_a_pipe_leaves_the_pipe(tmp_path: Path) -> None:
    # --out /dev/stdout or /dev/null: what failed is the download, not the place it went to,
    # which is not ours to delete (as root, /dev/null itself went). A named pipe stands in.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    out = tmp_path / "stdout"
    os.mkfifo(out)
    drained = ThreadPoolExecutor(1).submit(out.read_bytes)
    server = sends_part_of_a_result(listener)
    with listener, pytest.raises(ConnectionError, match=r"stopped sending stdout"):
        Client(f"http://127.0.0.1:{port}", "t").download_result("a-job", out)
    server.result(timeout=5)
    assert drained.result(timeout=5).startswith(b"row,prediction\n")
    assert stat.S_ISFIFO(out.stat().st_mode)  # was deleted
