"""HDF5 result files (docs/design.md, "Result files"): one file per run, streamed in SWMR mode.

Protocol (docs/design.md, "Result files"): every group, dataset and attribute is created first, ``status`` is set
to ``running``, then the file switches to SWMR mode; each evaluation point appends one row
(``resize`` + write + ``flush``). The final status is written after the SWMR writer is
closed, by reopening the file normally, so a killed run stays ``running``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import errno
import functools
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from .config import SCHEMA_VERSION, ConfigError
from .interrupts import Terminated
from .machine import compiled_for
from .outputs import TRACE_AXES, output, trace_columns
from .result import COMPLETE, FAILED, RUNNING, RunData
from .version import __version__


class OutputError(Exception):
    """The output path (parameter ``out``) cannot be used; the message is one line, ``str()`` is
    ``"out: ..."`` and the command line shows it under ``--out`` (:meth:`for_cli`)."""

    def __init__(self, message: str):
        super().__init__(f"out: {message}")
        self.parameter, self.message = "out", message

    def for_cli(self) -> str:
        return f"--out: {self.message}"


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing file (unless ``overwrite``) or an unwritable folder, before any work."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; allowed: a file path")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it, or choose another path")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"folder {folder} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path} cannot be written (permission denied)")
    problem = write_problem(folder)
    if problem:
        raise OutputError(f"{problem}")
    return path


def write_problem(folder) -> str | None:
    """Why files cannot be created in ``folder`` (or, if it does not exist yet, in its nearest
    existing parent), found by creating one; None if they can. Permissions alone say nothing for
    root or a read-only file system."""
    place = Path(os.path.abspath(folder))
    while not place.exists() and place.parent != place:
        place = place.parent
    if not place.is_dir():
        return f"{place} is not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=place, prefix=".fastpg-probe-"):
            pass
    except OSError as exc:
        return f"cannot write in {place} ({exc.strerror or exc})"
    return None


LOCK_WAIT_SECONDS = 10.0  # how long a writer waits for readers that hold a file (HDF5 file locks)


def open_for_writing(path, mode: str):
    """``h5py.File(path, mode)`` for a writer, waiting while a reader holds the file's lock.

    HDF5 locks a file while anyone has it open; a writer that creates or reopens a file that
    ``fastpg info``, a plot or a user's script is reading at that moment gets ``BlockingIOError``.
    Readers hold files briefly, so the writer retries for up to ``LOCK_WAIT_SECONDS``.
    """
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            return h5py.File(path, mode, libver="latest")
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class SpaceReserve:
    """Disk space held back in an output folder so that open result files can always be closed.

    HDF5 cannot close a file whose last metadata write fails for want of space: the handle stays
    open, every Python object of the file complains as it is freed, and closing the file (or the
    interpreter's exit) segfaults (h5py issues 914 and 2160). So while writers are open, each
    process keeps a hidden file beside them, truly allocated, of ``BASE`` bytes plus, for each
    writer, ``PER_FILE`` and twice the bytes of one of its rows (what a failed append can leave
    HDF5 to flush). When a write fails, :meth:`spend` deletes it before the writers close, which
    gives HDF5 room to flush and lets the files be marked ``failed``; it is not restored until
    every writer has gone. A folder without that much free space refuses new writers with
    ``ENOSPC`` before any file is created. (docs/design.md, "A full disk")
    """

    BASE = 256 * 1024
    PER_FILE = 16 * 1024
    _open: dict = {}

    def __init__(self, folder: Path):
        self.path = Path(folder) / f".fastpg-reserve-{os.getpid()}"
        self.writers = 0
        self.needs = 0  # what the open writers asked for
        self.size = 0  # the reserve file's size now
        self.spent = False  # given back for a failed write: not restored while writers remain

    @classmethod
    def of(cls, folder) -> SpaceReserve:
        """This process's reserve in ``folder``."""
        key = (os.getpid(), os.path.abspath(folder))
        if key not in cls._open:
            cls._open[key] = cls(Path(key[1]))
        return cls._open[key]

    def acquire(self, row_bytes: int, static_bytes: int = 0) -> int:
        """One more writer, whose rows take ``row_bytes`` and whose data written at creation
        ``static_bytes``: grow the reserve to cover it and check that the rest fits (``OSError``
        ENOSPC if not, before anything is written). Returns what to give back at :meth:`release`."""
        need = self.PER_FILE + 2 * int(row_bytes)
        try:
            self._allocate(self.BASE + self.needs + need)
            if free_bytes(self.path.parent) < static_bytes + self.PER_FILE:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            if self.writers:
                with contextlib.suppress(OSError):
                    self._allocate(self.BASE + self.needs)
            else:
                self.free()
            want = (self.BASE + self.needs + need + static_bytes + self.PER_FILE) // 1024
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: a new result file needs about {want} KiB "
                                        f"free in {self.path.parent} (its first data, and room kept to close "
                                        "files cleanly)") from None
        self.writers += 1
        self.needs += need
        return need

    def release(self, need: int) -> None:
        """One writer fewer; the reserve goes with the last one (else it shrinks, best effort)."""
        self.writers = max(self.writers - 1, 0)
        self.needs = max(self.needs - need, 0)
        if self.writers == 0:
            self.free()
            self.spent = False
        elif not self.spent:
            try:
                self._allocate(self.BASE + self.needs)
            except OSError:
                pass

    def spend(self) -> None:
        """A write has failed: give the space back now, for the open files to close."""
        self.spent = True
        self.free()

    def free(self) -> None:
        self.size = 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _allocate(self, size: int) -> None:
        """Make the reserve file ``size`` bytes, every block allocated."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            if size < self.size:
                os.ftruncate(fd, size)
            else:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
                    os.lseek(fd, self.size, os.SEEK_SET)  # no fallocate here: write the blocks
                    os.write(fd, bytes(size - self.size))
                    os.fsync(fd)
            self.size = size
        except OSError:
            if not self.writers:
                self.free()
            raise
        finally:
            os.close(fd)


def free_bytes(folder) -> int:
    """Bytes an unprivileged writer may still use in ``folder``'s file system (huge if unknown)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


_UNCLOSABLE: list = []  # (path, writer or file) that could not be closed (a full disk), kept alive
_FINALIZER_FAILURES = [0]  # h5py objects that could not be freed after a failed write


def unclosable_files() -> list:
    """Result files this process could not close after a failed write (their status stays
    ``running``, which readers treat as incomplete). A process with any must end with
    ``os._exit``: HDF5 would crash trying to close them at exit (see :class:`SpaceReserve`)."""
    return [str(path) for path, _ in _UNCLOSABLE] + (["(h5py objects)"] if _FINALIZER_FAILURES[0] else [])


def _quiet_h5py_finalizers() -> None:
    """After a failed write, h5py objects of the broken file fail as they are freed and Python
    prints each as "Exception ignored": count those instead (the failure itself is reported once)."""
    previous = sys.unraisablehook
    if getattr(previous, "fastpg", False):
        return

    def hook(unraisable):
        if "h5py" in repr(unraisable.object) or "h5py" in (unraisable.err_msg or ""):
            _FINALIZER_FAILURES[0] += 1
            return
        previous(unraisable)
    hook.fastpg = True
    sys.unraisablehook = hook


@contextlib.contextmanager
def atomic_file(path, newline: str | None = None):
    """A text file written in full or not at all: written to ``path.tmp``, synced, then renamed
    over ``path``; on any error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_COMMAND_LINE: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("fastpg_command_line", default=None)


def command_line() -> list[str]:
    """The command line a result file records (its ``argv`` attribute): the one given to
    :func:`recording` (the ``fastpg`` command gives its own), else the Python process's ``sys.argv``."""
    argv = _COMMAND_LINE.get()
    return list(sys.argv) if argv is None else list(argv)


@contextlib.contextmanager
def recording(argv):
    """Files written inside record ``argv`` as the command line that made them."""
    token = _COMMAND_LINE.set([str(a) for a in argv])
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def _file_errors(method):
    """A writer's method whose HDF5 failures come out as ``OSError`` with the system's errno and
    the file's path: h5py reports a failed write as ``RuntimeError`` with the errno in its text."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (RuntimeError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno:
                raise
            found = re.search(r"errno = (\d+)", str(exc))
            code = int(found[1]) if found else errno.EIO
            text = os.strerror(code) if found else " ".join(str(exc).split()) or exc.__class__.__name__
            raise OSError(code, text, str(self.path)) from None
    return wrapper


def append_row(ds, n: int, value) -> None:
    """Grow ``ds`` to ``n + 1`` rows along its first axis and write ``value`` (cast to the
    dataset's type, as h5py does) as row ``n``: the SWMR append, ``resize`` + write.

    Written with h5py's low-level calls: the high-level ``ds.resize`` and ``ds[n] = value`` spend
    about 75 us a dataset in Python, and a row touches some twenty datasets, which made a run
    with many evaluation points slower than its steps (docs/design.md, "Result files")."""
    dsid = ds.id
    tail = dsid.shape[1:]
    dsid.set_extent((n + 1, *tail))
    data = np.ascontiguousarray(value, dtype=ds.dtype).reshape((1, *tail))
    space = dsid.get_space()
    space.select_hyperslab((n, *(0 for _ in tail)), data.shape)
    dsid.write(h5py.h5s.create_simple(data.shape), space, data)


def _static_bytes(groups: list[dict], W_shape) -> int:
    """Bytes of the data a writer stores at creation: ``{name: array}`` groups and the final
    weights (a few KiB more for HDF5's own structures)."""
    return sum(np.asarray(data).nbytes for group in groups for data in group.values()) + 8 * int(np.prod(W_shape))


def one_line(exc: BaseException) -> str:
    """What a file's ``message`` says of the exception that ended it."""
    if isinstance(exc, Terminated):
        return "terminated (SIGTERM)"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or exc.__class__.__name__


def _describe(ds, path: str, batch: bool = False, **values) -> None:
    """Give ``ds`` the ``units`` and ``description`` of its row ``path`` in :data:`fastpg.outputs.OUTPUTS`
    (the batch file's description where it differs; ``values`` fill its placeholders)."""
    row = output(path)
    ds.attrs["units"] = row.units
    ds.attrs["description"] = row.describe(batch, **values)


def _axis(group, name: str, data, maxshape=None, dtype=None):
    """A dimension scale ``/trace/name`` holding ``data`` (see :data:`TRACE_AXES`)."""
    ds = group.create_dataset(name, data=data, maxshape=maxshape, dtype=dtype)
    _describe(ds, f"trace/{name}")
    ds.make_scale(name)
    return ds


def _trace_axes(tr, columns: dict, names, rows, *between, n_test: int, N: int) -> None:
    """Give the trace datasets ``names`` their dimension scales: ``rows`` for the evaluation points,
    then ``between`` (a batch file's runs), then by the dimensions of their row in the outputs table
    the test contexts and the positions (a dimension without a scale, such as ``k``, gets none)."""
    axes = {"context": _axis(tr, "context", np.arange(n_test, dtype=np.int64))}
    if "token_loglik" in names:
        axes["position"] = _axis(tr, "position", np.arange(N, dtype=np.int64))
    for name in names:
        ds = columns[name]
        if ds == rows:
            continue
        dims = output(f"trace/{name}").shape.strip("[]").split(",")[1:]
        for dim, scale in enumerate([rows, *between, *(axes.get(d.strip()) for d in dims)][:ds.ndim]):
            if scale is not None:
                ds.dims[dim].attach_scale(scale)


def _attr_value(value):
    """An attribute every HDF5 tool reads: booleans as integers 0/1 (h5py writes numpy booleans as an
    HDF5 enum that HDF5 1.10's h5dump cannot show), None as an empty string."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (list, tuple)):  # integers (pass_k): an int64 array, empty for none
        return np.array(value, dtype=np.int64)
    return value


def _config_attrs(group, config: dict) -> None:
    for key, value in config.items():
        group.attrs[key] = _attr_value(value)
    group.attrs["json"] = json.dumps(config)


BATCH_LAYOUT = "batch"
BASE_ARRAYS = ("loglik", "token_loglik", "sampling_loglik")  # the /base datasets a RunData carries (per context)
STR = h5py.string_dtype()


class ResultWriter:
    """Writes a result file: one run's (the run layout) or, given run ``ids``, the runs of a batch
    (docs/design.md, "Batch files"). Protocol (docs/design.md, "Result files"): :meth:`open`
    creates every group and dataset and marks the file ``running`` in SWMR mode; :meth:`append`
    adds one evaluation point; :meth:`close` writes the final weights, closes the SWMR writer and
    reopens the file to write the final status; :meth:`abort` marks it ``failed`` and never raises.

    Both layouts are one code path: a batch file's datasets have a leading run axis (``/trace``
    datasets: ``[eval point, run, ...]``), a run file's attributes of ``/task`` and ``/base``
    become datasets over runs, and ``/runs`` holds each run's ``id``, ``seed``, ``config`` (JSON),
    ``rows`` (evaluation points written for it: a run that fails stops there), ``status`` and
    ``message``. The file's creation runs under a :class:`SpaceReserve`.
    """

    def __init__(self, path, *, configs: list[dict], experiment: str = "post-training", ids: list[str] | None = None,
                 expected_rows: int = 256, resume=None):
        self.path = Path(path)
        self.configs, self.ids = list(configs), None if ids is None else list(ids)
        self.batch = ids is not None
        if not self.batch and len(self.configs) != 1:
            raise ValueError("a run file holds one run; give ids for a batch file")
        self.lead = (len(self.configs),) if self.batch else ()  # the run axis of every dataset
        self.n_test, self.N, self.experiment = self.configs[0]["n_test"], self.configs[0]["N"], experiment
        # the /trace datasets and the shape of one row of each (the outputs table, for these runs' options)
        self.trace_columns = trace_columns(self.configs[0])
        self.expected_rows = expected_rows
        # a run file's states for fastpg run --continue: {name in /final: (shape, dtype)}
        self.resume = None if self.batch else resume
        self.f = None
        self.columns: dict = {}
        self.rows = 0
        self.run_rows = np.zeros(len(self.configs), dtype=np.int64)

    def _create(self, static_bytes: int):
        """Open a new file for writing (the reserve grown first, and the ``static_bytes`` written
        at creation checked to fit); ``self.f``."""
        self.f, self.columns = None, {}
        reserve = SpaceReserve.of(self.path.parent if str(self.path.parent) else ".")
        self.reserved = reserve.acquire(self.row_bytes(), static_bytes)
        self.reserve = reserve
        try:
            self.f = open_for_writing(self.path, "w")
        except BaseException:
            self._release()
            raise
        return self.f

    def row_bytes(self) -> int:
        """Bytes one appended evaluation point takes (every trace dataset grows by one row)."""
        return 8 * len(self.configs) * sum(int(np.prod(tail)) for _, tail in self.trace_columns)

    def _close_swmr(self, W_final) -> None:
        """Write ``/final/W`` (unless None), flush, then close the SWMR file. Closing after a
        successful flush has nothing left to write; if the write or the flush fails, the file
        stays open for :meth:`abort` (closing a file HDF5 cannot flush would crash)."""
        if W_final is not None:
            self.f["final/W"][...] = W_final
        self.f.flush()
        f, self.f = self.f, None
        self.columns = {}
        f.close()

    def _reopen(self, set_status) -> None:
        """Reopen the closed file to write its final status with ``set_status(f)``, then let the reserve go."""
        with open_for_writing(self.path, "r+") as f:
            set_status(f)
        self._release()

    def _release(self) -> None:
        if getattr(self, "reserve", None) is not None:
            self.reserve.release(self.reserved)
            self.reserve = None

    def _guarded(self, action, *args):
        """Run a write; if it fails, abort (the file marked ``failed``, or left ``running``) and re-raise."""
        try:
            return action(*args)
        except BaseException as exc:
            self.abort(one_line(exc))
            raise

    def abort(self, message: str) -> None:
        """Best effort: close and mark ``failed``; never raises. The reserve is freed first, so a
        full disk has room for HDF5 to close the file; if even then there is none, the file is left
        open and ``running`` (which readers treat as incomplete; see :func:`unclosable_files`)."""
        if getattr(self, "reserve", None) is not None:
            self.reserve.spend()
        _quiet_h5py_finalizers()
        if self.f is not None:
            try:
                self.f.flush()  # fails cleanly where closing would crash
            except Exception:  # noqa: BLE001
                _UNCLOSABLE.append((self.path, self))  # keep every handle alive: freeing one would try to close it
                self._release()
                return
            f, self.f = self.f, None
            self.columns = {}
            try:
                f.close()
            except Exception:  # noqa: BLE001
                _UNCLOSABLE.append((self.path, f))
        try:
            with open_for_writing(self.path, "r+") as f:
                f.attrs["status"] = FAILED
                f.attrs["message"] = message
        except Exception:  # noqa: BLE001
            pass
        self._release()



    @_file_errors
    def open(self, *, tasks: list[dict], bases: list[dict], lqs: list[dict], W_shape) -> None:
        """Create the file with every run's static data (task, base model and Likelihood Quantile
        records, one per run), mark it ``running`` and enter SWMR mode (on failure the file is
        aborted, then the error raised)."""
        self._create(_static_bytes([r["datasets"] for r in tasks] + [r["datasets"] for r in bases] + list(lqs),
                                   (*self.lead, *W_shape)))
        self._guarded(self._fill, tasks, bases, lqs, W_shape)

    def _over_runs(self, values: list):
        """A dataset's data: the one run's value, or the runs' values stacked along the run axis."""
        return np.stack(values) if self.batch else values[0]

    def _root(self, f) -> None:
        """The root attributes and, by layout, ``/config`` (a run file) or ``/runs`` (a batch file)."""
        now = _dt.datetime.now(_dt.UTC).isoformat()
        argv = json.dumps(command_line())
        if not self.batch:
            config = self.configs[0]
            for key, value in dict(schema_version=SCHEMA_VERSION, fastpg_version=__version__, created=now, argv=argv,
                                   **compiled_for(), seed=config["seed"], experiment=self.experiment, status=RUNNING,
                                   message="").items():
                f.attrs[key] = value
            _config_attrs(f.create_group("config"), config)
            return
        R = len(self.ids)
        for key, value in dict(schema_version=SCHEMA_VERSION, fastpg_version=__version__, layout=BATCH_LAYOUT,
                               created=now, argv=argv, **compiled_for(), experiment=self.experiment, status=RUNNING,
                               message="", runs=R).items():
            f.attrs[key] = value
        g = f.create_group("runs")
        g.create_dataset("id", data=np.array(self.ids, dtype=object), dtype=STR)
        g.create_dataset("seed", data=np.array([int(c["seed"]) for c in self.configs], dtype=np.int64))
        g.create_dataset("config", data=np.array([json.dumps(c) for c in self.configs], dtype=object), dtype=STR)
        self.columns["rows"] = g.create_dataset("rows", data=self.run_rows)
        g.create_dataset("status", data=np.array([RUNNING] * R, dtype=object), dtype=STR)
        g.create_dataset("message", data=np.array([""] * R, dtype=object), dtype=STR)

    def _static_attrs(self, g, records: list[dict]) -> None:
        """A group's scalar facts (``gamma``, ...): attributes in a run file, datasets over runs in a batch file."""
        for key in records[0]["attrs"]:
            values = [_attr_value(r["attrs"][key]) for r in records]
            if not self.batch:
                g.attrs[key] = values[0]
            elif isinstance(values[0], str):
                g.create_dataset(key, data=np.array(values, dtype=object), dtype=STR)
            else:
                g.create_dataset(key, data=np.array(values))

    def _trace_column(self, tr, name: str, tail=(), chunk_rows: int = 1):
        """A growing ``/trace`` dataset of float64 rows: ``[eval point, (run,) *tail]``, NaN-filled in
        a batch file (a run that stopped leaves its cells NaN)."""
        ds = tr.create_dataset(name, shape=(0, *self.lead, *tail), maxshape=(None, *self.lead, *tail),
                               chunks=(chunk_rows, *self.lead, *tail), dtype="f8",
                               fillvalue=np.nan if self.batch else None)
        _describe(ds, f"trace/{name}", self.batch)
        self.columns[name] = ds
        return ds

    def _fill(self, tasks: list[dict], bases: list[dict], lqs: list[dict], W_shape) -> None:
        f = self.f
        self._root(f)
        for group, records in (("task", tasks), ("base", bases)):
            g = f.create_group(group)
            for name in records[0]["datasets"]:
                ds = g.create_dataset(name, data=self._over_runs([r["datasets"][name] for r in records]))
                _describe(ds, f"{group}/{name}", self.batch, **records[0].get("describe", {}))
            self._static_attrs(g, records)
        g = f["base"].create_group("lq")
        for name in lqs[0]:
            _describe(g.create_dataset(name, data=self._over_runs([lq[name] for lq in lqs])), f"base/lq/{name}", self.batch)

        tr = f.create_group("trace")  # its datasets kept open: a lookup by name costs more than the write
        # chunks: 256 rows of a run file; a batch file's at most 64 KB, no bigger than the trace
        rows_chunk = max(1, min(self.expected_rows, 8192 // len(self.configs))) if self.batch else 256
        for name, tail in self.trace_columns:
            self._trace_column(tr, name, tail, chunk_rows=rows_chunk if tail == () else 1)
        if "pass_at_k" in self.columns:
            self.columns["pass_at_k"].attrs["k"] = np.array(self.configs[0]["pass_k"], dtype=np.int64)
        if self.batch:
            rows, between = _axis(tr, "eval", np.zeros(0, dtype=np.int64), maxshape=(None,)), [
                _axis(tr, "run", np.array(self.ids, dtype=object), dtype=STR)]
            self.columns["eval"] = rows
        else:
            rows, between = self.columns["steps"], []
            rows.make_scale("steps")
        _trace_axes(tr, self.columns, [name for name, _ in self.trace_columns], rows, *between, n_test=self.n_test,
                    N=self.N)
        final = f.create_group("final")
        _describe(final.create_dataset("W", shape=(*self.lead, *W_shape), dtype="f8", fillvalue=0.0), "final/W",
                  self.batch)
        for name, (shape, dtype) in (self.resume or {}).items():  # what --continue needs besides W and the counters
            _describe(final.create_dataset(name, shape=shape, dtype=dtype, fillvalue=0), f"final/{name}")
        f.flush()
        f.swmr_mode = True

    @_file_errors
    def append(self, rows: list, loglik: np.ndarray, token_loglik: np.ndarray | None = None) -> None:
        """Append one evaluation point and flush: ``rows[r]`` is run ``r``'s row (a dict with a value
        for every trace column but the likelihoods; ``loglik[r]``, ``token_loglik[r]`` are its
        likelihoods), or None for a run of a batch file that has stopped (its cells stay NaN)."""
        n, c = self.rows, self.columns
        likelihoods = {"loglik": loglik, "token_loglik": token_loglik}
        if not self.batch:
            row = rows[0]
            for name, _ in self.trace_columns:
                append_row(c[name], n, likelihoods[name][0] if name in likelihoods else row[name])
        else:
            live = np.array([row is not None for row in rows])
            for name, tail in self.trace_columns:
                if name in likelihoods:
                    value = np.where(live.reshape(-1, *(1,) * len(tail)), likelihoods[name], np.nan)
                else:
                    value = [np.full(tail, np.nan) if row is None else row[name] for row in rows]
                append_row(c[name], n, value)
            append_row(c["eval"], n, n)
            self.run_rows[live] += 1
            c["rows"][...] = self.run_rows
        self.rows = n + 1
        self.f.flush()

    @_file_errors
    def close(self, statuses: list[str], messages: list[str], W_final: np.ndarray | None, resume=None) -> None:
        """Write the final weights (None: none; a batch file's failed runs hold zeros), and a run
        file's states for ``--continue`` (``resume``: ``{name: array}``, the datasets it was given
        room for), close the SWMR writer, then reopen to write each run's status and message (a batch
        file itself is then ``complete``). Raises if anything cannot be written (then call :meth:`abort`)."""
        if self.f is None:
            return
        if W_final is not None and self.resume and resume is not None:
            for name in self.resume:
                self.f[f"final/{name}"][...] = resume[name]
        self._close_swmr(W_final)

        def set_status(f):
            if self.batch:
                f["runs/status"][...] = np.array(statuses, dtype=object)
                f["runs/message"][...] = np.array(messages, dtype=object)
                f.attrs["status"], f.attrs["message"] = COMPLETE, ""
            else:
                f.attrs["status"], f.attrs["message"] = statuses[0], messages[0]
        self._reopen(set_status)


def is_batch_file(f) -> bool:
    return f.attrs.get("layout", "") == BATCH_LAYOUT


def batch_statuses(path) -> tuple[str, str, dict]:
    """``(file status, file message, {run id: run status})`` of a batch file; a run counts as
    complete only in a file that closed (``complete``). Unreadable files give ``("unreadable", ...)``."""
    try:
        with open_result(path) as f:
            status, message = str(f.attrs.get("status", "")), str(f.attrs.get("message", ""))
            ids = [x.decode() if isinstance(x, bytes) else str(x) for x in f["runs/id"][...]]
            runs = [x.decode() if isinstance(x, bytes) else str(x) for x in f["runs/status"][...]]
    except (OSError, KeyError, ValueError) as exc:
        return "unreadable", exc.__class__.__name__, {}
    if status != COMPLETE:
        runs = [status] * len(ids)
    return status, message, dict(zip(ids, runs))


def read_final_W(path) -> np.ndarray:
    """``/final/W`` of a complete fastpg file (for ``--base file``)."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("status") != COMPLETE:
                raise ConfigError("base_file", f"{path} is not a complete fastpg run; allowed: a file with status complete")
            return f["final/W"][...]
    except (OSError, KeyError) as exc:
        raise ConfigError("base_file", f"cannot read {path} ({exc.__class__.__name__}); "
                                         "allowed: a fastpg HDF5 result file") from None


def read_final_weights(path, run: str | None = None) -> np.ndarray:
    """``/final/W`` of a run file, or run ``run``'s slice of a batch file's (:attr:`RunData.W`)."""
    with open_result(path) as f:
        if run is None:
            return f["final/W"][...]
        return f["final/W"][_text(f["runs/id"][...]).index(run)]


def read_task_arrays(path, group: str = "task") -> dict:
    """The datasets of a run file's ``/task`` group (``test_x``, ``test_y``, ``centres``, ``W_star``,
    ``test_margin``), or of another ``group`` (``final``): what :class:`RunData` leaves on disk
    because most analyses do not need it."""
    with open_result(path) as f:
        return {name: ds[...] for name, ds in f[group].items()}


def open_result(path):
    """Open a result file for reading, also while it is being written (SWMR)."""
    try:
        return h5py.File(path, "r", libver="latest", swmr=True)
    except OSError:
        return h5py.File(path, "r")


def read_budget(path) -> tuple[int, str]:
    """``(steps the run was configured with, its message)`` of a run file, read without its data."""
    try:
        with open_result(path) as f:
            return int(f["config"].attrs["steps"]), str(f.attrs.get("message", ""))
    except (OSError, KeyError, ValueError):
        return 0, ""


def read_status(path) -> str:
    """The root ``status`` of a result file without reading its data (``unreadable`` if it cannot be opened)."""
    try:
        with open_result(path) as f:
            return str(f.attrs.get("status", "")) or "unreadable"
    except (OSError, KeyError, ValueError):
        return "unreadable"


def load(path, run: str | None = None) -> RunData:
    """Read a result file (also one still being written, through SWMR) into a :class:`RunData`.

    Only whole rows are returned: a row counts once every trace dataset has it. In a batch file
    (``fastpg sweep --layout batch``) ``run`` names the run (its id); :func:`load_batch` reads every
    run of one. A sweep folder is read by :func:`fastpg.load_sweep`.

    Parameters
    ----------
    path : path
        A run file or a batch file.
    run : str, optional
        The run's id, in a batch file.

    Returns
    -------
    RunData
    """
    if Path(path).is_dir():
        hint = "a sweep folder: use fastpg.load_sweep" if (Path(path) / "sweep.json").exists() else "a folder"
        raise IsADirectoryError(f"{path} is {hint}({str(path)!r})" if "sweep" in hint else
                                f"{path} is a folder; fastpg.load reads one result file (fastpg.load_sweep a sweep folder)")
    with open_result(path) as f:
        if is_batch_file(f):
            if run is None:
                raise ValueError(f"{path} is a batch file of {len(_text(f['runs/id'][...]))} runs; pass run=<run id> "
                                 "(or read them all with fastpg.store.load_batch)")
            runs = _read_batch(f, path, [run])
            if run not in runs:
                raise KeyError(f"{path} holds no run {run!r}")
            return runs[run]
        if run is not None:
            raise ValueError(f"{path} is a run file; run= applies to batch files only")
        trace = _trace_arrays(f)
        for ds in trace.values():
            if hasattr(ds, "refresh"):
                ds.refresh()
        arrays = {name: ds[...] for name, ds in trace.items()}
        rows = min(len(v) for v in arrays.values()) if arrays else 0
        arrays = {name: v[:rows] for name, v in arrays.items()}
        arrays.pop("pass_at_k", None)  # a function of loglik: RunData.pass_at_k
        if "loglik" in arrays:
            loglik = arrays.pop("loglik")
        else:  # schema 1 stored float32 likelihoods: 1 - 1e-8 reads as 1, below ~1e-45 as 0 (log -inf)
            with np.errstate(divide="ignore"):
                loglik = np.log(arrays.pop("likelihood").astype(np.float64))
        token = arrays.pop("token_loglik", None)
        base = {name: f["base"][name][...] for name in BASE_ARRAYS if name in f["base"]}
        base.update({key: _plain(value) for key, value in f["base"].attrs.items()})
        return RunData(
            path=str(path),
            status=str(f.attrs.get("status", "")),
            message=str(f.attrs.get("message", "")),
            experiment=str(f.attrs.get("experiment", "post-training")),
            created=str(f.attrs.get("created", "")),
            fastpg_version=str(f.attrs.get("fastpg_version", "")),
            schema_version=int(f.attrs.get("schema_version", 1)),
            config=json.loads(f["config"].attrs["json"]),
            trace=arrays,
            loglik=loglik,
            token_loglik=None if token is None else token.astype(np.float64),
            base=base,
            lq={name: ds[...] for name, ds in f["base/lq"].items()},
            task={key: _plain(value) for key, value in f["task"].attrs.items()},
            read_W=functools.partial(read_final_weights, str(path)),
        )


def _trace_arrays(f) -> dict:
    """The trace's datasets with a row per evaluation point (not its dimension scales)."""
    return {name: ds for name, ds in f["trace"].items() if name not in TRACE_AXES}


def load_batch(path, runs=None) -> dict[str, RunData]:
    """Every run of a batch file (or those whose ids are in ``runs``) as ``{run id: RunData}``,
    reading the file once. A run's status is its own once the file is complete, else the file's."""
    with open_result(path) as f:
        if not is_batch_file(f):
            raise ValueError(f"{path} is not a batch file; read it with fastpg.load")
        return _read_batch(f, path, runs)


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _read_batch(f, path, wanted) -> dict[str, RunData]:
    ids = _text(f["runs/id"][...])
    wanted = None if wanted is None else set(wanted)
    slots = [i for i, rid in enumerate(ids) if wanted is None or rid in wanted]
    trace = _trace_arrays(f)
    for ds in trace.values():
        ds.refresh()
    f["runs/rows"].refresh()
    rows = min(ds.shape[0] for ds in trace.values())
    run_rows = np.minimum(f["runs/rows"][...], rows)
    file_status, file_message = str(f.attrs.get("status", "")), str(f.attrs.get("message", ""))
    statuses, messages = _text(f["runs/status"][...]), _text(f["runs/message"][...])
    configs = _text(f["runs/config"][...])
    traces = {name: ds[:rows] for name, ds in trace.items()}
    # what a run file's RunData holds: base log-likelihoods and attributes, the LQ, the task's
    # attributes (not the weights, the test set or the teacher, which RunData does not carry)
    base_arrays = {name: ds[...] for name, ds in f["base"].items()
                   if isinstance(ds, h5py.Dataset) and (ds.ndim == 1 or name in BASE_ARRAYS)}
    task_arrays = {name: ds[...] for name, ds in f["task"].items() if ds.ndim == 1}
    lq = {name: ds[...] for name, ds in f["base/lq"].items()}
    root = {"experiment": str(f.attrs.get("experiment", "post-training")), "created": str(f.attrs.get("created", "")),
            "fastpg_version": str(f.attrs.get("fastpg_version", "")),
            "schema_version": int(f.attrs.get("schema_version", 1))}  # read once: an attribute read costs ~50 us
    done = file_status == COMPLETE
    out = {}
    for i in slots:
        n = int(run_rows[i])
        trace = {name: v[:n, i] for name, v in traces.items() if v.ndim == 2}
        token = traces["token_loglik"][:n, i] if "token_loglik" in traces else None
        base = {name: base_arrays[name][i] for name in BASE_ARRAYS if name in base_arrays}
        base.update({name: _plain(v[i]) for name, v in base_arrays.items() if v.ndim == 1})
        out[ids[i]] = RunData(
            path=str(path),
            status=statuses[i] if done else file_status,
            message=messages[i] if done else file_message,
            **root,
            config=json.loads(configs[i]),
            trace=trace,
            loglik=traces["loglik"][:n, i],
            token_loglik=token,
            base=base,
            lq={name: v[i] for name, v in lq.items()},
            task={name: _plain(_text([v[i]])[0] if v.dtype == object else v[i]) for name, v in task_arrays.items()},
            run=ids[i],
            read_W=functools.partial(read_final_weights, str(path), ids[i]),
        )
    return out


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
