"""
A real Airflow 3 deployment on this machine, for tests: scheduler (LocalExecutor), DAG processor and
API server as subprocesses on a fresh SQLite metadata DB, plus the AOS emulator as a subprocess.

``Deployment`` is a context manager: every process it starts (and their children, such as the
LocalExecutor's workers) is stopped on exit, whatever happened. Each process logs to a file under the
deployment's home; ``diagnostics()`` gathers their tails and the task logs for a failure message.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

AIRFLOW = [sys.executable, "-m", "airflow"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(method: str, url: str, body: Any = None, timeout: float = 30) -> Any:
    """One JSON request over loopback; raises ``AssertionError`` with the answer on an HTTP error."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback only
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            return json.load(resp)
    except urllib.error.HTTPError as err:
        raise AssertionError(f"{method} {url}: HTTP {err.code}: {err.read()[:2000]!r}") from None


class Deployment:
    """
    Scheduler + DAG processor + API server (SimpleAuthManager, everyone admin) and an AOS emulator.

    :param home: an empty folder for AIRFLOW_HOME (SQLite DB, logs, process logs).
    :param dags_folder: the DAGs folder every component reads.
    :param emulator_args: extra ``aos-emulator`` arguments (``--data-start``...).
    :param env: extra environment for every Airflow process.
    """

    def __init__(self, home: Path, dags_folder: Path, emulator_args: list[str], env: dict[str, str]) -> None:
        self.home = home
        self.dags_folder = dags_folder
        self.emulator_args = emulator_args
        self.extra_env = env
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api/v2"
        self.emulator: dict[str, Any] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    # -- start and stop -------------------------------------------------------------------------

    def __enter__(self) -> Deployment:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _start(self) -> None:
        self.emulator = self._start_emulator()
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            # The same signing key in every component, or tasks cannot talk to the execution API.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            # Only the runs a test triggers: no scheduled run of the latest interval on unpause.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW_CONN_AOS_DEFAULT": json.dumps(
                {
                    "conn_type": "aos",
                    "host": self.emulator["graph_url"],
                    "login": self.emulator["client_id"],
                    "password": self.emulator["client_secret"],
                    "extra": {"identity_url": self.emulator["identity_url"]},
                }
            ),
            **self.extra_env,
        }
        with (self.home / "db-migrate.log").open("wb") as out:
            done = subprocess.run(
                [*AIRFLOW, "db", "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT, check=False
            )
        assert done.returncode == 0, (self.home / "db-migrate.log").read_text()[-3000:]
        self._spawn("api-server", [*AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"], env)  # fmt: skip
        self._spawn("scheduler", [*AIRFLOW, "scheduler"], env)
        self._spawn("dag-processor", [*AIRFLOW, "dag-processor"], env)
        self._wait("the API server", lambda: http_json("GET", f"{self.api_url}/monitor/health"))

    def _start_emulator(self) -> dict[str, Any]:
        args = [sys.executable, "-m", "airflow_provider_aos.emulator", "--port", "0", *self.emulator_args]
        proc = self._spawn("emulator", args, dict(os.environ), stdout=subprocess.PIPE)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # one JSON line when ready
        assert line, f"the AOS emulator did not start: {self.process_log('emulator')}"
        return dict(json.loads(line))

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str], stdout: int | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.home / f"{name}.log").open("wb")
        self._logs.append(log)
        # A session of its own: stop() ends the process and every child it forked (task workers).
        proc = subprocess.Popen(
            args, env=env, stdout=stdout or log, stderr=log, start_new_session=True, cwd=self.home
        )
        self._procs[name] = proc
        return proc

    def stop(self) -> None:
        """Stop every process this deployment started, with its children: TERM, then KILL after 15 s."""
        for proc in self._procs.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(proc, signal.SIGKILL)  # also children that outlived their parent
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        for log in self._logs:
            log.close()

    # -- using it -------------------------------------------------------------------------------

    def _wait(self, what: str, probe: Any, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.assert_running()
            try:
                return probe()
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out waiting for {what}\n{self.diagnostics()}") from None
            time.sleep(1)

    def assert_running(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}\n{self.diagnostics()}")

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return http_json(method, f"{self.api_url}{path}", body)

    def wait_for_dag(self, dag_id: str) -> dict[str, Any]:
        """The DAG, once the DAG processor has parsed it; fails on an import error."""

        def probe() -> Any:
            errors = self.api("GET", "/importErrors")["import_errors"]
            assert not errors, f"import errors: {errors}"
            return self.api("GET", f"/dags/{dag_id}")

        try:
            return dict(self._wait(f"the DAG {dag_id} to be parsed", probe))
        except AssertionError as err:
            errors = self.api("GET", "/importErrors")["import_errors"]
            raise AssertionError(f"{err}\nimport errors: {errors}") from None

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 180) -> dict[str, Any]:
        """
        Poll the run until it ends; returns it on success, fails with the task logs otherwise.

        A task that fails or waits for a retry ends the wait at once, with its log: no point in
        waiting through the example's 2-minute retry delay to see the same error twice.
        """
        deadline = time.monotonic() + timeout
        run_path = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}"
        while True:
            self.assert_running()
            run = self.api("GET", run_path)
            if run["state"] == "success":
                return dict(run)
            states = {
                ti["task_id"]: ti["state"]
                for ti in self.api("GET", f"{run_path}/taskInstances")["task_instances"]
            }
            if run["state"] == "failed" or {"failed", "up_for_retry"} & set(states.values()):
                raise AssertionError(f"run {run_id}: {run['state']}, tasks {states}\n{self.diagnostics()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"run {run_id} still {run['state']} (tasks {states}) after {timeout:.0f}s\n{self.diagnostics()}"
                )
            time.sleep(1)

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """A task's return value, through the REST API."""
        path = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}/xcomEntries/return_value"
        value = self.api("GET", path)["value"]
        return json.loads(value) if isinstance(value, str) else value

    def emulator_count(self, start: datetime, end: datetime) -> int:
        query = urllib.parse.urlencode({"startTime": _z(start), "endTime": _z(end)})
        return int(http_json("GET", f"{self.emulator['admin_url']}/audit/count?{query}")["count"])

    def process_log(self, name: str, tail: int = 3000) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def task_logs(self) -> Iterator[Path]:
        return (p for p in sorted((self.home / "logs").rglob("*.log")) if "dag_id=" in str(p))

    def diagnostics(self) -> str:
        parts = [
            f"--- task log {p.relative_to(self.home)}\n{p.read_text(errors='replace')[-4000:]}"
            for p in self.task_logs()
        ]
        parts += [f"--- {name}.log (tail)\n{self.process_log(name)}" for name in self._procs]
        return "\n".join(parts)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(proc.pid, sig)  # the process was started in its own session: pgid == pid


def _z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
