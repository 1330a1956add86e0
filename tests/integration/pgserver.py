"""A real PostgreSQL server for the tests: initdb in a temporary directory, pg_ctl with a unix
socket in that directory and no TCP port, stopped at the end.

PostgreSQL refuses to run as root, so as root the server runs as the unprivileged `postgres`
user of Debian's package (created here as a system user when missing), and the directory is
handed to it. A server that cannot start fails the test loudly: nothing is skipped.

Administration goes through Debian's `psql` over the socket (no Python driver: Debian's
python3-psycopg2 is not a dependency of the project)."""
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

PG_BIN = "/usr/lib/postgresql/15/bin"
PSQL = "/usr/bin/psql"
USER = "postgres"


def _owner():
    """The user the server runs as: ourselves, or `postgres` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/false",
                        USER], check=True)
    return USER


class PgServer:
    """One PostgreSQL cluster. `uri(db)` is a libpq URI for a database of it (no password:
    local connections are trusted, inside a directory only its user and root can reach)."""

    def __init__(self):
        self.user = _owner()
        self.dir = tempfile.mkdtemp(prefix="futured-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = 5432
        self._names = itertools.count(1)
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run([f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--no-sync"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("listen_addresses = ''\n"
                    f"unix_socket_directories = '{self.dir}'\n"
                    "max_connections = 200\n"
                    "fsync = on\n")
        self.start()

    def _run(self, argv, **kw):
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        p = subprocess.run(argv, capture_output=True, text=True, **kw)
        if p.returncode != 0:
            raise RuntimeError(f"{argv} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p.stdout

    def start(self):
        self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"),
                   "-w", "-t", "60", "start"])

    def stop(self, mode="fast"):
        self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop"])

    def log(self):
        with open(os.path.join(self.dir, "log")) as f:
            return f.read()

    def psql(self, sql, db="postgres", user="postgres"):
        """Runs `sql`; returns the rows as lists of strings (unaligned, tab-separated)."""
        p = subprocess.run([PSQL, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                            "-h", self.dir, "-p", str(self.port), "-U", user, "-d", db,
                            "-c", sql], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"psql: {sql}: {p.stderr}")
        return [line.split("\t") for line in p.stdout.splitlines() if line]

    def new_database(self):
        """A fresh database and a role of its own that owns it (not a superuser, as a DBA would
        grant). Returns (uri, name)."""
        name = f"futured_t{os.getpid()}_{next(self._names)}"
        self.psql(f"CREATE ROLE {name} LOGIN")
        self.psql(f"CREATE DATABASE {name} OWNER {name}")
        return self.uri(name, name), name

    def uri(self, db, user):
        return f"postgresql:///{db}?host={self.dir}&port={self.port}&user={user}"

    def close(self):
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the whole session (started on first use)."""
    server = PgServer()
    yield server
    server.close()


@pytest.fixture
def pg_database(pg_server):
    """A fresh database and role of its own for one test: (uri, name)."""
    return pg_server.new_database()
