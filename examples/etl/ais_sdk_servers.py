"""ETL transformers written with AIStore's own Python SDK (`pip install aistore[etl]`), served
by any of its three web servers, unchanged: aisle runs them under `hpush`, `hpull` and (the
FastAPI one) `ws`, with or without the file-path hand-off (`argument: fqn`).

    python ais_sdk_servers.py <transform> <fastapi|flask|http> <port>

Transforms:
  md5     the hex MD5 of the object
  echo    the object itself
  resize  a JPEG/PNG scaled to fit etl_args' {"w": .., "h": ..} (default 224x224), as JPEG
  how     "path" when the server was handed a file path (ETL_DIRECT_FQN=true with
          argument: fqn), "bytes" when it got the bytes -- for tests of the hand-off
  sleep   sleeps for etl_args seconds, then echoes (for timeout tests)
"""

import hashlib
import io
import json
import sys
import time


def transform_class(base, name):
    class T(base):
        def transform(self, data, path, etl_args):
            if name == "how":
                return b"path" if isinstance(data, str) else b"bytes"
            if isinstance(data, str):  # ETL_DIRECT_FQN: a local path
                with open(data, "rb") as f:
                    data = f.read()
            if name == "md5":
                return hashlib.md5(data).hexdigest().encode()
            if name == "echo":
                return data
            if name == "sleep":
                time.sleep(float(etl_args or "0"))
                return data
            if name == "resize":
                from PIL import Image

                args = json.loads(etl_args) if etl_args else {}
                img = Image.open(io.BytesIO(data))
                img.draft("RGB", (args.get("w", 224), args.get("h", 224)))
                img = img.convert("RGB")
                img.thumbnail((args.get("w", 224), args.get("h", 224)), Image.BILINEAR)
                out = io.BytesIO()
                img.save(out, "JPEG", quality=90)
                return out.getvalue()
            raise ValueError(f"unknown transform {name}")

    return T


def main():
    name, variant, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if variant == "fastapi":
        from aistore.sdk.etl.webserver.fastapi_server import FastAPIServer as base
    elif variant == "flask":
        from aistore.sdk.etl.webserver.flask_server import FlaskServer as base
    elif variant == "http":
        from aistore.sdk.etl.webserver.http_multi_threaded_server import HTTPMultiThreadedServer as base
    else:
        raise SystemExit(f"unknown server {variant}")
    transform_class(base, name)(host="127.0.0.1", port=port).start()


if __name__ == "__main__":
    main()
