"""Fetches a Bootstrap-Pack with aiocoap and reads it with decoders that
are not the gateway's (cbor2, the json module) under the SenML rules a
strict LwM2M client applies, for tests/bootstrap.rs.

    bspack_reader.py HOST:PORT ENDPOINT cbor|json

Prints one JSON object: {"records": {path: value}} or {"error": why}.
The rules (RFC 8428 4.5.1, LwM2M 1.1 7.4.4 and 7.4.5): a payload is one
array and nothing after it; each record is a map; the base name, once
given, applies to the records after it; a record's name is the base name
and its own name joined; that name is an LwM2M path (/O/I/R or
/O/I/R/RI, the leading slash included); each record has one value."""
import asyncio
import io
import json
import re
import sys

import aiocoap
import cbor2
from aiocoap import Code, Message

PATH = re.compile(r"^/\d{1,5}(/\d{1,5}){0,3}$")
# SenML CBOR labels (RFC 8428 6): bn -2, n 0, v 2, vs 3, vb 4, vd 8.
CBOR = {-2: "bn", 0: "n", 2: "v", 3: "vs", 4: "vb", 8: "vd", -1: "bt", 6: "t"}
VALUES = ("v", "vs", "vb", "vd", "vlo")


def read(records):
    if not isinstance(records, list) or not records:
        raise ValueError("the payload is not a non-empty SenML array")
    out, bn = {}, ""
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise ValueError(f"record {i} is not a map")
        bn = r.get("bn", bn)
        name = bn + r.get("n", "")
        if not PATH.match(name):
            raise ValueError(f"record {i}: name {name!r} is no LwM2M path")
        vals = [k for k in VALUES if k in r]
        if len(vals) != 1:
            raise ValueError(f"record {i} ({name}): {len(vals)} values")
        v = r[vals[0]]
        out[name] = v.hex() if isinstance(v, bytes) else v
    return out


def decode(fmt, payload):
    if fmt == "json":
        return json.loads(payload.decode("utf-8"))  # raises on trailing data
    f = io.BytesIO(payload)
    data = cbor2.CBORDecoder(f).decode()
    if f.tell() != len(payload):
        raise ValueError(f"{len(payload) - f.tell()} bytes of extraneous data after the SenML array")
    return [{CBOR.get(k, k): v for k, v in r.items()} if isinstance(r, dict) else r for r in data]


async def main(server, endpoint, fmt):
    ctx = await aiocoap.Context.create_client_context()
    req = Message(code=Code.GET, uri=f"coap://{server}/bspack?ep={endpoint}")
    req.opt.accept = 112 if fmt == "cbor" else 110
    resp = await ctx.request(req).response
    if resp.code != Code.CONTENT:
        print(json.dumps({"error": f"answered {resp.code}"}))
        return
    try:
        records = read(decode(fmt, resp.payload))
        print(json.dumps({"records": records, "bytes": len(resp.payload),
                          "format": resp.opt.content_format}))
    except Exception as e:  # noqa: BLE001 - every refusal is the answer
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
