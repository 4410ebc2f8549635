"""An ETL transformer written with AIStore's own Python SDK (`pip install aistore[etl]`),
unchanged: aisle runs it under its `hpush` communicator.

    uvicorn ais_md5_server:fastapi_app --host 127.0.0.1 --port 8000

Each object is PUT to it; it answers with the hex MD5 of the bytes.
"""

import hashlib

from aistore.sdk.etl.webserver.fastapi_server import FastAPIServer


class Md5Server(FastAPIServer):
    def transform(self, data: bytes, path: str, etl_args: str) -> bytes:
        return hashlib.md5(data).hexdigest().encode()


fastapi_server = Md5Server()
fastapi_app = fastapi_server.app
