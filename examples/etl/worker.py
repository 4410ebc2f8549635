"""A persistent `exec` worker (mode: worker): one long-lived process serves many objects.

Framing on stdin: a JSON line {"path", "args"}, then the object as chunks (u32 big-endian length
+ bytes) ended by a zero-length chunk. Answer on stdout with chunks the same way, a zero-length
chunk, then a JSON status line: {"status": 200} or {"status": 422, "message": "..."}.
"""

import json
import struct
import sys

inp, out = sys.stdin.buffer, sys.stdout.buffer


def chunks():
    while True:
        (n,) = struct.unpack(">I", inp.read(4))
        if n == 0:
            return
        yield inp.read(n)


while True:
    line = inp.readline()
    if not line:
        break
    request = json.loads(line)
    for chunk in chunks():
        upper = chunk.upper()
        out.write(struct.pack(">I", len(upper)) + upper)
    out.write(struct.pack(">I", 0))
    out.write(b'{"status": 200}\n')
    out.flush()
