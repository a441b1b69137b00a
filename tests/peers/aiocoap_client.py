"""An LwM2M client's registration flow written with aiocoap, an independent
CoAP stack, used by tests/peers.rs. Prints one JSON object with what it saw."""
import asyncio
import json
import sys

import aiocoap
from aiocoap import Code, Message


async def main(server: str, endpoint: str, n_objects: int) -> None:
    ctx = await aiocoap.Context.create_client_context()
    links = ['</>;rt="oma.lwm2m";ct=11543', "</1/0>", "</3/0>"]
    links += [f"</{30000 + i}/0>" for i in range(n_objects)]
    payload = ",".join(links).encode()
    out = {"payload_len": len(payload)}

    req = Message(code=Code.POST, payload=payload, uri=f"coap://{server}/rd?ep={endpoint}&lt=120&lwm2m=1.1&b=U")
    req.opt.content_format = 40
    resp = await ctx.request(req).response
    out["register"] = str(resp.code)
    location = "/".join(resp.opt.location_path)
    out["location"] = location

    upd = Message(code=Code.POST, uri=f"coap://{server}/{location}?lt=300")
    out["update"] = str((await ctx.request(upd).response).code)

    dereg = Message(code=Code.DELETE, uri=f"coap://{server}/{location}")
    out["deregister"] = str((await ctx.request(dereg).response).code)

    again = Message(code=Code.POST, uri=f"coap://{server}/{location}")
    out["update_after_deregister"] = str((await ctx.request(again).response).code)
    await ctx.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
