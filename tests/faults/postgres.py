"""A private PostgreSQL cluster that a test may stop and start without touching any other.

initdb into a temporary directory and pg_ctl on a free port, as the postgres system user
(PostgreSQL refuses to run as root). The machine's own PostgreSQL, which other tests use,
is never touched.
"""

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.processes import free_port

SERVER_USER = "postgres"


def binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return Path(found[-1]).parent


class PrivatePostgres:
    def __init__(self) -> None:
        self.bin = binaries()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mlsite-pg-"))
        self.data = self.dir / "data"
        account = pwd.getpwnam(SERVER_USER)
        os.chown(self.dir, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", f"{self.dir}/log", "-w", "start"
        )

    def stop(self) -> None:
        """Stop at once, as a crash or a failover would: open connections are cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = ["runuser", "-u", SERVER_USER, "--", str(self.bin / program), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=120, cwd=self.dir)
