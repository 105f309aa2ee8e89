#!/usr/bin/env python3
"""Prints one JSON object describing a GGUF file's weight matrices: general.file_type
and, for every 2-D tensor, [ggml type, row length, sha256 of its bytes] (gguf-py's reader).

    python3 hash_tensors.py FILE.gguf [--types-only]
"""
import hashlib
import json
import sys

from gguf import GGUFReader


def main():
    path = sys.argv[1]
    types_only = "--types-only" in sys.argv[2:]
    r = GGUFReader(path)
    ft = r.fields["general.file_type"]
    out = {"file_type": int(ft.parts[ft.data[0]][0]), "tensors": {}}
    for t in r.tensors:
        if len(t.shape) < 2:
            continue
        entry = [t.tensor_type.name, int(t.shape[0])]
        if not types_only:
            entry.append(hashlib.sha256(t.data.tobytes()).hexdigest())
        out["tensors"][t.name] = entry
    json.dump(out, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
