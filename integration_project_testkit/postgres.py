"""A throwaway PostgreSQL server for the tests: ``initdb`` into a folder of its own, started
on a free port of 127.0.0.1 with a password user and a database, stopped and removed after.

``python3 dev.py test`` starts one for the whole run and hands it to pytest (and its workers)
in :data:`URL_ENV`; a test run without it starts its own (:func:`server_for_tests`). The binaries
are those on ``PATH``, else Debian's (``/usr/lib/postgresql/<version>/bin``). ``initdb``
refuses to run as root, so as root the server runs as the ``postgres`` user (Debian's package
creates it), in a folder that user owns.

    python -m integration_project_testkit.postgres    # start one, print its URL, wait
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from integration_project_testkit.live_stack import free_port

#: Where ``dev.py test`` puts the URL of the server it started for the run.
URL_ENV = "INTEGRATION_TEST_POSTGRES_URL"
SYSTEM_USER = "postgres"
DATABASE = "dagster"
USER = "integration"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries here, or no ``postgres`` user to run them as root."""


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    database: str
    user: str
    password: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    @classmethod
    def from_url(cls, url: str) -> PostgresServer:
        parts = urlsplit(url)
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 5432,
            parts.path.lstrip("/"),
            unquote(parts.username or ""),
            unquote(parts.password or ""),
        )

    def dagster_env(self) -> dict[str, str]:
        """The variables ``deploy/dagster.postgres.yaml`` reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.database,
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
        }


def bin_dir() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``; :class:`PostgresUnavailable` when there is none."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=_version)
    if debian:
        return debian[-1].parent
    raise PostgresUnavailable("no PostgreSQL server binaries (pg_ctl) on PATH or in Debian's place")


def _version(path: Path) -> tuple[int, ...]:
    name = path.parent.parent.name
    return tuple(int(p) for p in name.split(".") if p.isdigit())


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A new server with database :data:`DATABASE` owned by :data:`USER` (a random password,
    scram-sha-256 over TCP), stopped and removed when the block ends."""
    tools = _Tools(bin_dir(), _system_user())
    folder = Path(tempfile.mkdtemp(prefix="integration-pg-"))
    data = folder / "data"
    server = PostgresServer("127.0.0.1", free_port(), DATABASE, USER, secrets.token_urlsafe(18))
    try:
        tools.own(folder)
        pwfile = folder / "password"
        pwfile.write_text(server.password + "\n")
        tools.own(pwfile)
        auth = ["--auth-host=scram-sha-256", "--auth-local=trust", "--no-instructions"]
        tools.run("initdb", "-D", data, "-U", USER, f"--pwfile={pwfile}", "-E", "UTF8", *auth)
        options = f"-p {server.port} -c listen_addresses=127.0.0.1"
        options += f" -c unix_socket_directories={folder}"
        # A throwaway server: nothing in it must survive a crash of this machine, so commits
        # need not wait for the disk (the suite runs dozens of ledgers on it).
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        log = folder / "server.log"
        tools.run("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "-t", "60", "start")
        try:
            tools.run("createdb", "-h", folder, "-p", server.port, "-U", USER, DATABASE)
            yield server
        finally:
            tools.run("pg_ctl", "-D", data, "-m", "fast", "-w", "stop", check=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _system_user() -> pwd.struct_passwd | None:
    """As root, the user the server runs as; None when it may run as we are."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root and there is no {SYSTEM_USER!r} user to run PostgreSQL as"
        ) from None


@dataclass(frozen=True)
class _Tools:
    """PostgreSQL's programs in ``folder``, run as ``user`` (None: as we are)."""

    folder: Path
    user: pwd.struct_passwd | None

    def own(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def run(self, program: str, *args: object, check: bool = True) -> None:
        command = [str(self.folder / program), *map(str, args)]
        if self.user is not None:
            command = ["runuser", "-u", self.user.pw_name, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd="/")
        if check and done.returncode:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr[-2000:]}")


@contextmanager
def server_for_tests() -> Iterator[PostgresServer]:
    """The run's server (:data:`URL_ENV`, started by ``dev.py test``), else one of our own."""
    url = os.environ.get(URL_ENV)
    if url:
        yield PostgresServer.from_url(url)
        return
    with postgres_server() as server:
        yield server


@contextmanager
def fresh_database(server: PostgresServer) -> Iterator[str]:
    """A new, empty database on ``server`` for one test's ledger: its URL. Dropped after,
    with any connection a pool still holds to it."""
    import psycopg2

    name = f"ledger_{secrets.token_hex(6)}"
    admin = psycopg2.connect(server.url, connect_timeout=10)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield replace(server, database=name).url
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def main() -> int:
    """Start a server, print its URL, and keep it until SIGTERM or Ctrl-C."""
    with postgres_server() as server:
        print(server.url, flush=True)  # noqa: T201
        try:
            signal.sigwait({signal.SIGTERM, signal.SIGINT})
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    raise SystemExit(main())
