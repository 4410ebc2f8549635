"""A one-shot `exec` transformer: the object on stdin, the result on stdout.

Exit status 65 rejects an input (the client gets 422); any other failure is a 500.
AISLE_ETL_ARGS holds the request's argument string, AISLE_OBJECT_PATH its bucket/key.
"""

import sys

data = sys.stdin.buffer.read()
if data.startswith(b"\x00"):
    print("binary input is not text", file=sys.stderr)
    sys.exit(65)
sys.stdout.buffer.write(data.upper())
