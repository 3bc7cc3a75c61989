"""Processes of the local backend: what a job's container runs here (argv, env, working directory),
each attempt in a process group of its own, killing groups, and the attempts' log files."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pathlib
import re
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from jobscheduler.core.manifests import JOB_TYPE_LABEL
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.local")

#: Host variables a local job inherits (a pod inherits none; these make the same commands run here).
_INHERITED_ENV: Final = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")
_LAST_LINE_CHARS: Final = 300
#: Where the kernel describes processes (Linux); absent elsewhere (macOS): see is_leftover.
PROC = pathlib.Path("/proc")
#: Set in every local job's environment: how a restarted service recognises its leftover processes.
MARKER_ENV: Final = "JOBSCHEDULER_JOB_ID"
#: Variables a job's manifest may not set on this backend (defence in depth: validation refuses them).
_RESERVED_NAMES: Final = frozenset({"PATH", "HOME", "TMPDIR", "BROWSER", "HOSTNAME"})
_RESERVED_PREFIXES: Final = ("LD_", "PYTHON", "JOBSCHEDULER_", "KUBERNETES_")


#: Kubernetes' size limit of a Secret: a bigger file is not a secret value.
MAX_SECRET_BYTES: Final = 1024 * 1024
_SECRET_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_SECRET_KEY: Final = re.compile(r"[-._a-zA-Z0-9]{1,253}")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a job's container cannot start here: the job fails with this reason and message."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start one attempt of a job: its command, environment and working directory."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    workdir: pathlib.Path


def reserved(name: str) -> bool:
    """A variable a job's manifest may not set here: it would change what the server's user runs
    (the dynamic loader's, Python's, the shell's search path, ...) or pose as the backend's own."""
    upper = name.upper()
    return upper in _RESERVED_NAMES or upper.startswith(_RESERVED_PREFIXES)


#: Job types whose command the caller chooses (not the service's own program or an installed plugin's).
CALLER_COMMAND_TYPES: Final = frozenset({"container"})


def runs_callers_command(manifest: Mapping[str, Any]) -> bool:
    """Whether the Job runs a command its caller chose (a container job), rather than this service's
    own program (timer, webhook, healthcheck) or an installed plugin's, which the operator chose."""
    labels = (manifest.get("metadata") or {}).get("labels") or {}
    return labels.get(JOB_TYPE_LABEL) in CALLER_COMMAND_TYPES


def prepare(
    data_dir: pathlib.Path,
    job_id: str,
    container: Mapping[str, Any],
    *,
    secrets_dir: pathlib.Path | None = None,
    namespace: str = "default",
) -> Launch | Refusal:
    """The job's launch (its working directory created), or why it cannot run here.

    The environment: the inherited host variables, then the manifest's (reserved names dropped,
    with a warning; ``valueFrom.secretKeyRef`` read from ``secrets_dir/<name>/<key>``, default
    ``data_dir/secrets``), then the backend's own (HOME, TMPDIR, HOSTNAME, the marker), so they
    always win. A missing secret is a Refusal with Kubernetes' reason, CreateContainerConfigError.
    """
    argv = [str(a) for a in (*container.get("command", []), *container.get("args", []))]
    if not container.get("command"):
        # Kubernetes would run the image's entry point (with the args): no image here to know it by.
        return Refusal(
            "StartError",
            "the container has no command to run locally (the image's entry point is not known here)",
        )
    for i, arg in enumerate(argv):
        if "\0" in arg:
            return Refusal(
                "StartError",
                f"the container's command line (argument {i}) contains a NUL byte; it cannot run",
            )
    if argv[0] == "jobscheduler":
        # Our own image's entry point: the same program, this interpreter, isolated (-I: no PYTHON*
        # variables, no user site-packages, not the working directory on sys.path).
        argv = [sys.executable, "-I", "-m", "jobscheduler", *argv[1:]]
    elif argv[0] in ("python", "python3"):
        # The image's Python (a plugin job type's `python -I -m its.module`): this interpreter,
        # where the plugin package is installed.
        argv = [sys.executable, *argv[1:]]
    requested: dict[str, str] = {}
    for item in container.get("env", []):
        if not isinstance(item, Mapping) or "name" not in item:
            continue
        name, value = str(item["name"]), str(item.get("value", ""))
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if isinstance(ref, Mapping):
            found = read_secret(secrets_dir or data_dir / "secrets", ref, namespace)
            if isinstance(found, Refusal):
                return found
            value = found
        if not name or "=" in name or "\0" in name or "\0" in value:
            return Refusal(
                "StartError",
                f"the container's env[{name!r}] is not a valid variable (empty, '=' or a NUL byte)",
            )
        if reserved(name):
            log.warning("reserved variable dropped from a local job's env", job_id=job_id, name=name)
            continue
        requested[name] = value
    workdir = data_dir / "jobs" / job_id
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
    env.update(requested)
    env.update({"HOME": str(workdir), "TMPDIR": str(workdir / "tmp"), "HOSTNAME": job_id, MARKER_ENV: job_id})
    return Launch(tuple(argv), env, workdir)


def read_secret(secrets_dir: pathlib.Path, ref: Mapping[str, Any], namespace: str) -> str | Refusal:
    """The value of ``secrets_dir/<name>/<key>`` (UTF-8, as a Secret's key would be given to the
    container), or a Refusal that names the secret and key, never the value."""
    name, key = str(ref.get("name", "")), str(ref.get("key", ""))
    if not _SECRET_NAME.fullmatch(name) or not _SECRET_KEY.fullmatch(key) or key in (".", ".."):
        return Refusal("CreateContainerConfigError", f"invalid secret reference {name!r}/{key!r}")
    directory = secrets_dir / name
    if not directory.is_dir():
        return Refusal("CreateContainerConfigError", f'secret "{name}" not found (in {secrets_dir})')
    try:
        # Non-blocking, and a regular file only: a FIFO or device here must not hang the backend.
        fd = os.open(directory / key, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise IsADirectoryError(key)
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError:
        return Refusal("CreateContainerConfigError", f"couldn't find key {key} in Secret {namespace}/{name}")
    try:
        value = data.decode()
    except UnicodeDecodeError:
        value = ""
    if len(data) > MAX_SECRET_BYTES or (not value and data) or "\0" in value:
        return Refusal(
            "CreateContainerConfigError",
            f"key {key} of Secret {namespace}/{name} is not a usable variable value"
            f" (UTF-8 without NUL, at most {MAX_SECRET_BYTES} bytes)",
        )
    return value


class Child:
    """A started attempt's process: ``pid``, ``returncode`` (None until it exits) and ``wait()``.

    Its exit is awaited without a thread where Linux offers a pidfd (the loop polls it), else by a
    thread of its own that waits for it."""

    def __init__(self, popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._exited: asyncio.Future[int] = loop.create_future()
        try:
            fd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3
            threading.Thread(
                target=self._wait_in_thread, args=(loop,), name=f"wait-{self.pid}", daemon=True
            ).start()
        else:
            loop.add_reader(fd, self._on_exit, loop, fd)

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)  # (one waiter's cancel is not everyone's)

    def _on_exit(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        loop.remove_reader(fd)
        os.close(fd)
        code = self._popen.poll()
        if code is None:  # (cannot be: the pidfd is readable once it has exited; wait to be sure)
            threading.Thread(target=self._wait_in_thread, args=(loop,), daemon=True).start()
        else:
            self._exit(code)

    def _wait_in_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        code = self._popen.wait()
        with contextlib.suppress(RuntimeError):  # (the loop closed meanwhile)
            loop.call_soon_threadsafe(self._exit, code)

    def _exit(self, code: int) -> None:
        if not self._exited.done():
            self._exited.set_result(code)


class Supervisor:
    """Starts attempts as process groups, waits for them and kills them.

    A process is started in a thread, not on the event loop: starting one blocks its caller
    until the child has exec'd (a few milliseconds on a busy machine, more for a big parent),
    which on the loop would stall every call and stream the service is serving meanwhile."""

    def __init__(self, *, kill_grace_seconds: float) -> None:
        self.kill_grace_seconds = kill_grace_seconds
        self._starter = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="spawn")
        self._starting: set[asyncio.Future[subprocess.Popen[bytes]]] = set()

    async def spawn(self, launch: Launch, log_path: pathlib.Path) -> Child:
        loop = asyncio.get_running_loop()
        log_file = open_log(log_path)
        unwanted = threading.Event()  # set when the caller is cancelled (or the service stops)

        def start() -> subprocess.Popen[bytes]:
            if unwanted.is_set():  # (cancelled while waiting for a starter thread)
                raise ProcessLookupError("the start was cancelled")
            popen = subprocess.Popen(
                list(launch.argv),
                cwd=launch.workdir,
                env=dict(launch.env),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel kills all of it
            )
            if unwanted.is_set():  # cancelled meanwhile: killed and reaped here, loop or no loop
                kill_stragglers(popen.pid)
                popen.wait()
            return popen

        started = loop.run_in_executor(self._starter, start)
        started.add_done_callback(lambda _: log_file.close())  # (the child has its own copy by then)
        self._starting.add(started)
        started.add_done_callback(self._starting.discard)
        try:
            popen = await asyncio.shield(started)
        except asyncio.CancelledError:
            unwanted.set()
            started.add_done_callback(_kill_unwanted)  # (if it returned just before the flag was set)
            raise
        return Child(popen, loop)

    async def close(self) -> None:
        """Wait for the starts under way (those cancelled kill what they start): after this,
        no process of ours is started any more."""
        if self._starting:
            await asyncio.wait(set(self._starting))  # (their callbacks, _kill_unwanted too, run first)
        self._starter.shutdown(wait=False)

    async def wait(self, proc: Child, cancel: asyncio.Event, deadline_at: float | None) -> str:
        """ "exited", "cancelled" or "deadline"; in the latter two the process group is killed."""
        waiter = asyncio.ensure_future(proc.wait())
        canceller = asyncio.ensure_future(cancel.wait())
        try:
            timeout = (
                None if deadline_at is None else max(0.0, deadline_at - asyncio.get_running_loop().time())
            )
            done, _ = await asyncio.wait(
                {waiter, canceller}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            canceller.cancel()
        if waiter in done:
            kill_stragglers(proc.pid)
            return "exited"
        waiter.cancel()
        await self.kill_group(proc, grace=self.kill_grace_seconds)
        return "cancelled" if cancel.is_set() else "deadline"

    async def kill_group(self, proc: Child, *, grace: float) -> None:
        """SIGTERM to the process group, SIGKILL to whatever is left after ``grace`` seconds."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
            async with asyncio.timeout(grace):
                await proc.wait()
        kill_stragglers(proc.pid)
        await proc.wait()


def _kill_unwanted(started: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    """A process whose starter was cancelled meanwhile: its group killed, and reaped."""
    if started.cancelled() or started.exception() is not None:
        return
    popen = started.result()
    if popen.returncode is None:
        kill_stragglers(popen.pid)
        threading.Thread(target=popen.wait, daemon=True).start()


def kill_stragglers(pgid: int) -> None:
    """SIGKILL what is left of a process group (children can outlive their leader)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def process_start(pid: int) -> str | None:
    """When ``pid`` started, as ``<boot id>:<clock ticks since boot>`` (/proc/<pid>/stat field 22):
    with the pid, it names one process for good. None where there is no /proc (or no such process)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold anything
    if len(fields) < 20:
        return None
    try:
        boot = (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{boot}:{fields[19]}"


def is_leftover(pgid: int, job_id: str, recorded_start: str | None) -> bool:
    """Whether the process group ``pgid`` an earlier run recorded for ``job_id`` still exists and
    is still that job's (pids and so group ids get reused).

    Where there is /proc: a living leader must have the recorded start time (rows from before it
    was recorded: the job's marker in its environment); a group whose leader is gone must have a
    member carrying the job's marker. Without /proc, a group with the recorded id is taken to be it.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False  # nothing left
    except PermissionError:
        return False  # another user's group: not ours
    if not (PROC / "self").exists():
        return True
    current = process_start(pgid)
    if current is not None:
        if recorded_start is not None:
            return current == recorded_start
        return belongs_to(pgid, job_id)
    return any(belongs_to(pid, job_id) for pid in _group_members(pgid))


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid):
            members.append(int(entry.name))
    return members


def marked_processes() -> dict[str, list[int]]:
    """The living processes that carry a job's marker in their environment, by job id (only our
    own user's environments are readable). Empty where there is no /proc."""
    marked: dict[str, list[int]] = {}
    prefix = f"{MARKER_ENV}=".encode()
    try:
        entries = list(PROC.iterdir())
    except OSError:
        return marked
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        for var in environ.split(b"\0"):
            if var.startswith(prefix):
                marked.setdefault(var[len(prefix) :].decode(errors="replace"), []).append(int(entry.name))
    return marked


def belongs_to(pid: int, job_id: str) -> bool:
    """Whether ``pid`` carries this job's marker in its environment (readable for our own processes)."""
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER_ENV}={job_id}".encode() in environ.split(b"\0")


def open_log(path: pathlib.Path) -> BinaryIO:
    """The attempt's log file, the child's stdout and stderr (a local file: opening it never blocks long)."""
    return open(path, "wb")


def read_lines(path: pathlib.Path, offset: int) -> tuple[list[str], int]:
    """Complete lines from ``offset`` on, and the offset after the last complete line."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    text = data[:end].decode("utf-8", "replace")
    return text.splitlines(), offset + end


def last_line(path: pathlib.Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:_LAST_LINE_CHARS] if lines else ""
