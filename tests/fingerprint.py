"""Fingerprints of result files: a sha1 per HDF5 dataset (and per object's attributes), to show
that a change of code leaves every result bit-identical.

    python tests/fingerprint.py write FOLDER OUT.json     # every .h5 under FOLDER
    python tests/fingerprint.py compare A.json B.json     # exit status 1 if anything differs

What is left out, because it differs between two runs of the same thing: the datasets
``trace/wall_time`` (seconds taken) and the attributes ``created`` and ``argv`` (when and how a
file was made) and ``fastpg_version``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np

SKIPPED_DATASETS = ("wall_time",)
SKIPPED_ATTRS = ("created", "argv", "fastpg_version")


def _digest(value) -> str:
    array = np.asarray(value)
    if array.dtype.kind == "O":  # variable-length strings
        data = json.dumps([v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]).encode()
    else:
        data = array.tobytes()
    return hashlib.sha1(repr((array.dtype.str, array.shape)).encode() + data).hexdigest()


def file_fingerprint(path) -> dict:
    """``{object name: sha1}`` of one HDF5 file: every dataset's dtype, shape and bytes, and every
    object's attributes (``name@attrs``), the skipped ones aside."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            attrs = {k: _digest(v) for k, v in sorted(obj.attrs.items())
                     if k not in SKIPPED_ATTRS and not k.startswith(("DIMENSION_LIST", "REFERENCE_LIST"))}
            if attrs:
                out[f"{name}@attrs"] = hashlib.sha1(json.dumps(attrs, sort_keys=True).encode()).hexdigest()
            if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] not in SKIPPED_DATASETS:
                out[name] = _digest(obj[()])
        visit("/", f)
        f.visititems(visit)
    return out


def folder_fingerprint(folder) -> dict:
    folder = Path(folder)
    return {str(p.relative_to(folder)): file_fingerprint(p) for p in sorted(folder.rglob("*.h5"))}


def compare(a: dict, b: dict) -> list[str]:
    """Lines naming every file or object that is only in one fingerprint or differs."""
    lines = []
    for path in sorted(set(a) | set(b)):
        if path not in a or path not in b:
            lines.append(f"{path}: only in {'the second' if path not in a else 'the first'}")
            continue
        for name in sorted(set(a[path]) | set(b[path])):
            if a[path].get(name) != b[path].get(name):
                lines.append(f"{path}: {name} differs" if name in a[path] and name in b[path]
                             else f"{path}: {name} only in {'the second' if name not in a[path] else 'the first'}")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "write":
        prints = folder_fingerprint(argv[1])
        Path(argv[2]).write_text(json.dumps(prints, indent=1, sort_keys=True))
        print(f"{len(prints)} files, {sum(map(len, prints.values()))} objects -> {argv[2]}")
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        a, b = (json.loads(Path(p).read_text()) for p in argv[1:])
        lines = compare(a, b)
        print("\n".join(lines) if lines else f"identical: {len(a)} files, {sum(map(len, a.values()))} objects")
        return 1 if lines else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
