"""Run untrusted code (a submission's ``method.py``) in a sandboxed child process, and read back what it made.

:meth:`Sandbox.run` starts ``python -m effbench.sandbox ENTRY`` inside a sandbox and sends it a JSON request on
its standard input; ``ENTRY`` is one of :data:`ENTRIES` (a function of EffBench's, never one the submission
names). The child answers with a JSON manifest and the bytes of the files it made (trained models,
``.tflite`` flatbuffers) on a private copy of its standard output; everything else it prints, the
submission's code included, goes to its standard error, which the parent shows as log lines. The parent
reads the answer as untrusted data (:func:`read_answer`: sizes, nesting, framing); what becomes of it
(records, cached models) is decided by the parent alone.

**The sandbox** (Debian's ``bubblewrap``, ``bwrap``; :meth:`Sandbox.command`):

- no network: a network namespace of its own, with only a loopback device that reaches nothing outside;
- a read-only view of the machine (``/`` bound read-only, so the Python environment and EffBench import
  as usual) with its own ``/run`` and ``/dev`` (GPUs, ``/dev/nvidia*``, stay usable); the only writable places
  are ``/tmp``, ``/dev/shm`` and a scratch folder, each a ``tmpfs`` of at most ``Limits.scratch_bytes`` that
  vanishes with the child; what it must read (the submission folder, its results, the task data) is bound
  read-only under ``/run/sandbox``; its environment is a few variables of ours (no tokens, no proxies);
- its own PID, IPC and UTS namespaces: it sees and signals no other process, and when its first process
  ends, or the parent dies (``--die-with-parent``), every process in it is killed;
- limits (``setrlimit``, inherited by every process it starts): CPU seconds per process, address space,
  file size, and the number of processes and threads; run as root, the child drops to user ``nobody``
  (``setpriv``, no capabilities, ``no_new_privs``), since the kernel does not count processes of root;
- a wall-clock limit: past it the whole process group is killed (``SIGKILL``).

Without ``bwrap`` (``EFFBENCH_SANDBOX=unshare``, or ``bwrap`` missing) the fallback is ``unshare --net``
with the same limits and process group, and the drop to ``nobody`` when run as root: no network, and no
writing anywhere ``nobody`` may not; but the file system is not isolated (it can read and write what
``nobody`` can). ``EFFBENCH_SANDBOX=none`` refuses to run submitted code at all.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pwd
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from effbench.records import nesting_depth

ROOT = "/run/sandbox"
SCRATCH = f"{ROOT}/scratch"
SANDBOX_ENV = "EFFBENCH_SANDBOX"
# The functions a child may run, by name: `python -m effbench.sandbox ENTRY` runs only these.
ENTRIES = {
    "check": "effbench.untrusted:child_check",
    "run": "effbench.untrusted:child_run",
    "verify": "effbench.verify:child_verify",
    "probe": "effbench.sandbox:child_probe",
}
# The answer's manifest is JSON of at most this many bytes, nested at most this deep.
MANIFEST_LIMIT = 64 * 2**20
MANIFEST_DEPTH = 48
# Log lines of a child shown at most (a child printing without end would flood the terminal).
LOG_LINES = 5000
LOG_LINE_CHARS = 2000
NOBODY = "nobody"
# Environment variables a child keeps (the sandbox clears the rest: no tokens, no proxies).
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS", "EFFBENCH_VERBOSE",
              "PYTHONHASHSEED", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
              "TF_NUM_INTEROP_THREADS")  # fmt: skip


class SandboxError(RuntimeError):
    """The sandbox could not run, or its child overran a limit or answered something malformed."""


@dataclass(frozen=True)
class Limits:
    """What a sandboxed child may use. Environment variables ``EFFBENCH_SANDBOX_<FIELD>`` override each."""

    cpu_seconds: int = 3600
    wall_seconds: int = 3600
    memory_bytes: int = 16 * 2**30
    # Processes and threads (TensorFlow starts a few dozen threads).
    processes: int = 512
    file_bytes: int = 4 * 2**30
    scratch_bytes: int = 4 * 2**30
    # The answer: manifest and files together.
    answer_bytes: int = 8 * 2**30

    @classmethod
    def for_budget(cls, budget: str, environ: Mapping[str, str] = os.environ) -> Limits:
        """Generous bounds for a training budget (a bound against runaways, not a benchmark rule)."""
        hours = {"smoke": 0.5, "quick": 6.0}.get(budget, 96.0)
        memory = min(cls.memory_bytes, int(0.8 * _physical_memory()))
        limits = cls(cpu_seconds=int(hours * 3600 * 4), wall_seconds=int(hours * 3600), memory_bytes=memory)
        return limits.from_environ(environ)

    def from_environ(self, environ: Mapping[str, str] = os.environ) -> Limits:
        changes = {}
        for name in self.__dataclass_fields__:
            text = environ.get(f"EFFBENCH_SANDBOX_{name.upper()}")
            if text is not None:
                if not text.isdigit() or int(text) <= 0:
                    raise SandboxError(f"EFFBENCH_SANDBOX_{name.upper()}={text!r}: expected a positive integer")
                changes[name] = int(text)
        return replace(self, **changes)


def _physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class Mount:
    """A host path the child reads, bound read-only at ``ROOT/<name>``."""

    source: Path
    name: str

    @property
    def target(self) -> str:
        return f"{ROOT}/{self.name}"


@dataclass
class Answer:
    """What a child sent back: its manifest and the files it lists (``manifest["files"]``: name -> index)."""

    manifest: dict[str, Any]
    files: list[bytes] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def file(self, index: Any) -> bytes:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.files):
            raise SandboxError(f"the sandbox's answer names file {index!r}, which it did not send")
        return self.files[index]


# ------------------------------------------------------------------------------------------ the parent


def sandbox_kind(environ: Mapping[str, str] = os.environ) -> str:
    """``bwrap``, or the ``unshare`` fallback; raises when neither can run (or ``EFFBENCH_SANDBOX=none``)."""
    wanted = environ.get(SANDBOX_ENV, "")
    if wanted == "none":
        raise SandboxError(f"{SANDBOX_ENV}=none: submitted code is never run outside the sandbox")
    if wanted not in ("", "bwrap", "unshare"):
        raise SandboxError(f"{SANDBOX_ENV}={wanted!r}: expected bwrap, unshare or none")
    if wanted != "unshare" and shutil.which("bwrap"):
        return "bwrap"
    if wanted == "bwrap":
        raise SandboxError("bwrap is not installed: install bubblewrap (Debian: apt-get install bubblewrap)")
    if shutil.which("unshare") and (os.geteuid() != 0 or shutil.which("setpriv")):
        return "unshare"
    raise SandboxError(
        "no sandbox for submitted code: install bubblewrap (Debian: apt-get install bubblewrap); "
        "the fallback needs util-linux's unshare (and setpriv when run as root)"
    )


class Sandbox:
    """A sandbox of ``kind`` (default :func:`sandbox_kind`) that sees ``mounts`` read-only, under ``limits``."""

    def __init__(self, mounts: Sequence[Mount] = (), limits: Limits | None = None, kind: str | None = None):
        self.mounts, self.limits, self.kind = list(mounts), limits or Limits(), kind or sandbox_kind()
        self._scratch: str | None = None

    def path(self, name: str) -> str:
        """Where the child finds the mount ``name`` (the fallback binds nothing: the host path itself)."""
        mount = next(mount for mount in self.mounts if mount.name == name)
        return mount.target if self.kind == "bwrap" else str(mount.source)

    def command(self, entry: str) -> list[str]:
        """The command that runs ``python -m effbench.sandbox ENTRY`` in the sandbox."""
        python = [sys.executable, "-I", "-m", "effbench.sandbox", entry]
        drop = _drop_privileges()
        if self.kind == "unshare":
            unshare = ["unshare", "--net", *(["--map-root-user"] if os.geteuid() != 0 else [])]
            return [*unshare, "--", *drop, *python]
        # Every writable place is a tmpfs of bounded size (each counts against the machine's memory).
        size = ["--size", str(self.limits.scratch_bytes), "--perms", "1777", "--tmpfs"]
        command = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                   "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--ro-bind", "/", "/",
                   "--dev", "/dev", "--proc", "/proc", *size, "/tmp", *size, "/dev/shm", "--size", "1048576",
                   "--tmpfs", "/run", "--dir", ROOT, *size, SCRATCH]  # fmt: skip
        if os.geteuid() != 0:
            command.insert(1, "--unshare-user")
        for device in sorted(Path("/dev").glob("nvidia*")):  # a GPU stays usable (and is all that is added)
            command += ["--dev-bind", str(device), str(device)]
        for path in shadowed_code_paths():
            command += ["--ro-bind", path, path]
        for mount in self.mounts:
            command += ["--ro-bind", str(mount.source), mount.target]
        command += ["--chdir", SCRATCH]
        if drop:
            command += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        return [*command, "--", *drop, *python]

    def environment(self) -> dict[str, str]:
        """The child's whole environment: a few of ours (no tokens, no proxies), and its own folders."""
        scratch = SCRATCH if self.kind == "bwrap" else self._scratch
        values = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        values.update({"HOME": f"{scratch}/home", "TMPDIR": "/tmp" if self.kind == "bwrap" else scratch,
                       "KERAS_HOME": f"{scratch}/keras", "MPLCONFIGDIR": f"{scratch}/matplotlib",
                       "XDG_CACHE_HOME": f"{scratch}/cache", "PYTHONDONTWRITEBYTECODE": "1",
                       "TF_USE_LEGACY_KERAS": "1", "EFFBENCH_SCRATCH": scratch})  # fmt: skip
        names = {mount.name for mount in self.mounts}
        if "data" in names:
            values["EFFBENCH_DATA"] = self.path("data")
        if "cache" in names:
            values["EFFBENCH_CACHE"] = self.path("cache")
        return values

    def run(self, entry: str, request: Mapping[str, Any], log: Callable[[str], None] = print) -> Answer:
        """Run ``ENTRIES[entry]`` on ``request``; its answer, or :class:`SandboxError` saying why not.

        The child's log lines are passed to ``log`` as they come (at most ``LOG_LINES``).
        """
        with contextlib.ExitStack() as stack:
            if self.kind == "unshare":
                self._scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="effbench-sandbox-"))
                if os.geteuid() == 0:
                    os.chown(self._scratch, pwd.getpwnam(NOBODY).pw_uid, pwd.getpwnam(NOBODY).pw_gid)
            answer_file = stack.enter_context(tempfile.TemporaryFile())
            return self._run(self.command(entry), request, answer_file, log)

    def _run(self, command: list[str], request: Mapping[str, Any], answer_file: BinaryIO,
             log: Callable[[str], None]) -> Answer:  # fmt: skip
        limits = self.limits
        child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.environment(),
            cwd=self._scratch or "/", start_new_session=True, preexec_fn=_limit(limits, _process_limit(limits)),
        )  # fmt: skip
        lines: list[str] = []
        readers = [
            threading.Thread(target=_copy_capped, args=(child.stdout, answer_file, limits.answer_bytes), daemon=True),
            threading.Thread(target=_log_lines, args=(child.stderr, log, lines), daemon=True),
        ]
        for reader in readers:
            reader.start()
        with contextlib.suppress(BrokenPipeError):  # a child that ended before reading: its status says why
            child.stdin.write(json.dumps(request).encode())
            child.stdin.close()
        timed_out = _wait(child, limits.wall_seconds)
        for reader in readers:
            reader.join(timeout=10)
        overrun = _overrun(child.returncode, timed_out, limits, answer_file.tell() > limits.answer_bytes)
        if overrun:
            raise SandboxError(f"{overrun}{_last_lines(lines)}")
        answer_file.seek(0)
        answer = read_answer(answer_file, limits.answer_bytes, child.returncode)
        answer.log = lines
        if "error" in answer.manifest:
            raise SandboxError(str(answer.manifest["error"]))
        return answer


# The sandbox's own tmpfs mounts: whatever lies under them on the host is hidden inside.
TMPFS_TARGETS = ("/tmp", "/dev/shm", "/run")


def shadowed_code_paths() -> list[str]:
    """The interpreter, the environment and EffBench's checkout, where they lie under one of the sandbox's tmpfs
    mounts (a checkout cloned into /tmp, as CI may): bound again read-only, or the child would not start."""
    import effbench

    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(effbench.__file__).resolve().parent.parent)}
    return sorted(
        path for path in candidates
        if any(path == target or path.startswith(f"{target}/") for target in TMPFS_TARGETS) and Path(path).exists()
    )  # fmt: skip


def _drop_privileges() -> list[str]:
    """``setpriv`` to ``nobody`` when run as root (the kernel does not limit root's processes), else nothing."""
    if os.geteuid() != 0:
        return []
    user = pwd.getpwnam(NOBODY)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all"]  # fmt: skip


def _process_limit(limits: Limits) -> int:
    """RLIMIT_NPROC counts every thread of the child's user on the machine: those running now, plus the allowance."""
    uid = pwd.getpwnam(NOBODY).pw_uid if os.geteuid() == 0 else os.getuid()
    running = 0
    for task in Path("/proc").glob("[0-9]*/task/[0-9]*"):
        with contextlib.suppress(OSError):
            running += task.stat().st_uid == uid
    return running + limits.processes


def _limit(limits: Limits, processes: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the forked child, before it executes the sandbox
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _wait(child: subprocess.Popen, seconds: int) -> bool:
    """Wait for the child; past ``seconds``, kill its whole process group. True if it was killed so."""
    try:
        child.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        return True
    finally:
        # Whatever is left of the group (the unshare fallback has no PID namespace to end it all).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)


def _overrun(status: int, timed_out: bool, limits: Limits, answer_too_long: bool) -> str | None:
    """Why the child was stopped, or None when it ended by itself."""
    if timed_out:
        return f"the sandboxed process ran past its wall-clock limit of {limits.wall_seconds} s and was killed"
    if answer_too_long:
        return f"the sandboxed process sent more than {limits.answer_bytes} bytes and was refused"
    signals = {signal.SIGXCPU: f"its CPU-time limit of {limits.cpu_seconds} s",
               signal.SIGXFSZ: f"its file-size limit of {limits.file_bytes} bytes",
               signal.SIGKILL: "a limit (killed)", signal.SIGSEGV: "a crash (segmentation fault)"}  # fmt: skip
    # bwrap exits with 128 + the signal that ended its child; Popen reports a signal as a negative status.
    number = -status if status < 0 else status - 128 if status > 128 else 0
    if number in signals:
        return f"the sandboxed process was stopped by {signals[number]}"
    return None


def _copy_capped(source: BinaryIO, target: BinaryIO, limit: int) -> None:
    """Copy ``source`` to ``target`` up to ``limit + 1`` bytes; drain (and drop) the rest."""
    written = 0
    while chunk := source.read(2**20):
        if written <= limit:
            target.write(chunk[: limit + 1 - written])
            written += len(chunk)


def _log_lines(source: BinaryIO, log: Callable[[str], None], kept: list[str]) -> None:
    for raw in source:
        if len(kept) < LOG_LINES:
            line = raw.decode("utf-8", "replace").rstrip()[:LOG_LINE_CHARS]
            kept.append(line)
            if line:
                log(line)
        elif len(kept) == LOG_LINES:
            kept.append(f"... further log lines of the sandboxed process left out (more than {LOG_LINES})")
            log(kept[-1])


def _last_lines(lines: Sequence[str], count: int = 15) -> str:
    shown = [line for line in lines if line.strip()][-count:]
    return ("; its last log lines:\n    " + "\n    ".join(shown)) if shown else ""


# ------------------------------------------------------------------------------------ the answer format
#
# One frame: 8 bytes (big-endian length of the manifest), the manifest (UTF-8 JSON, an object whose "sizes"
# lists the byte count of each file), then each file's bytes in that order, then nothing.


def write_answer(stream: BinaryIO, manifest: Mapping[str, Any], files: Sequence[bytes]) -> None:
    body = json.dumps({**manifest, "sizes": [len(content) for content in files]}, allow_nan=False).encode()
    stream.write(struct.pack(">Q", len(body)))
    stream.write(body)
    for content in files:
        stream.write(content)
    stream.flush()


def read_answer(stream: BinaryIO, limit: int, status: int = 0) -> Answer:
    """The answer in ``stream``, refused unless it is exactly one well-formed frame of at most ``limit`` bytes."""
    header = stream.read(8)
    if len(header) < 8:
        raise SandboxError(
            f"the sandboxed process ended (exit status {status}) without an answer: the submitted code ended it "
            "(os._exit, a signal) or it crashed"
        )
    (length,) = struct.unpack(">Q", header)
    if length > min(MANIFEST_LIMIT, limit):
        raise SandboxError(f"the sandbox's answer has a manifest of {length} bytes, over the limit")
    try:
        manifest = json.loads(stream.read(length))
    except (RecursionError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SandboxError(f"the sandbox's answer is not valid JSON: {error}"[:500]) from None
    if not isinstance(manifest, dict) or nesting_depth(manifest) > MANIFEST_DEPTH:
        raise SandboxError("the sandbox's answer is not a JSON object of bounded depth")
    sizes = manifest.pop("sizes", None)
    if not isinstance(sizes, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in sizes) or sum(sizes) > limit:  # fmt: skip
        raise SandboxError("the sandbox's answer lists no valid file sizes")
    files = [stream.read(size) for size in sizes]
    if any(len(content) != size for content, size in zip(files, sizes, strict=True)) or stream.read(1):
        raise SandboxError(
            "the sandbox's answer does not end where its manifest says: it was cut short, or more than one "
            "process wrote it (os.fork in the submitted code?)"
        )
    return Answer(manifest, files)


# ------------------------------------------------------------------------------------------- the child


@contextlib.contextmanager
def private_stdout() -> Iterator[BinaryIO]:
    """The process's standard output for the answer alone; ``print`` (and the submission's) goes to stderr."""
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield answer
    finally:
        answer.close()


def child_main(entry: str) -> None:
    """Run ``ENTRIES[entry]`` on the JSON request of stdin and write its answer; any exception is the answer."""
    with private_stdout() as answer:
        try:
            module_name, function = ENTRIES[entry].split(":")
            handler = getattr(importlib.import_module(module_name), function)
            manifest, files = handler(json.loads(sys.stdin.read()))
        except BaseException as error:  # noqa: BLE001 - the parent reports it; KeyboardInterrupt and exit too
            manifest, files = {"error": describe_error(error)}, []
        write_answer(answer, manifest, files)
    # Threads the submitted code started must not keep the process, nor atexit handlers run its code.
    os._exit(0)


def describe_error(error: BaseException) -> str:
    if isinstance(error, ChildError):
        return str(error)
    return "".join(traceback.format_exception(type(error), error, error.__traceback__)).strip()


class ChildError(Exception):
    """An error a child reports with its own message (no traceback)."""


def child_probe(request: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """What the sandbox looks like from inside (for the tests): user, network, writable places."""
    import socket

    probe: dict[str, Any] = {"uid": os.getuid(), "pid": os.getpid()}
    try:
        socket.create_connection((request.get("host", "127.0.0.1"), request.get("port", 9)), timeout=2).close()
        probe["connected"] = True
    except OSError as error:
        probe["connected"] = False
        probe["network_error"] = str(error)
    probe["writable"] = {}
    for path in request.get("write", []):
        try:
            Path(path).write_text("written from the sandbox")
            probe["writable"][path] = True
        except OSError:
            probe["writable"][path] = False
    return probe, [b"a file"]


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ENTRIES:
        sys.exit(f"usage: python -m effbench.sandbox {{{','.join(ENTRIES)}}}  (run by EffBench, in the sandbox)")
    # Through the module, not __main__: exceptions the entries raise are effbench.sandbox's classes.
    importlib.import_module("effbench.sandbox").child_main(sys.argv[1])
