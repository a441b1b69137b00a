"""A small LwM2M device written with aiocoap (an independent CoAP stack),
used by tests/rpc.rs: it registers with SenML JSON as its format and serves
Device object resources 9 (read), 15 (write) and 4 (execute).
Prints "registered" once registered, then serves until killed."""
import asyncio
import json
import sys

import aiocoap
import aiocoap.resource as resource
from aiocoap import Code, Message

SENML_JSON = 110
state = {"battery": 87, "timezone": "Europe/Berlin", "reboots": 0}


class Battery(resource.Resource):
    async def render_get(self, request):
        body = json.dumps([{"bn": "/3/0/9", "v": state["battery"]}]).encode()
        return Message(payload=body, content_format=SENML_JSON)


class Timezone(resource.Resource):
    async def render_get(self, request):
        body = json.dumps([{"bn": "/3/0/15", "vs": state["timezone"]}]).encode()
        return Message(payload=body, content_format=SENML_JSON)

    async def render_put(self, request):
        if request.opt.content_format != SENML_JSON:
            return Message(code=Code.UNSUPPORTED_CONTENT_FORMAT)
        records = json.loads(request.payload)
        base = ""
        for r in records:
            base = r.get("bn", base)
            if base + r.get("n", "") == "/3/0/15" and "vs" in r:
                state["timezone"] = r["vs"]
                return Message(code=Code.CHANGED)
        return Message(code=Code.BAD_REQUEST)


class Reboot(resource.Resource):
    async def render_post(self, request):
        state["reboots"] += 1
        return Message(code=Code.CHANGED)


async def main(server: str, endpoint: str) -> None:
    site = resource.Site()
    site.add_resource(["3", "0", "9"], Battery())
    site.add_resource(["3", "0", "15"], Timezone())
    site.add_resource(["3", "0", "4"], Reboot())
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0))
    links = '</>;rt="oma.lwm2m";ct="110",</1/0>,</3/0>'
    req = Message(code=Code.POST, payload=links.encode(),
                  uri=f"coap://{server}/rd?ep={endpoint}&lt=300&lwm2m=1.1&b=U")
    req.opt.content_format = 40
    resp = await ctx.request(req).response
    print("registered" if resp.code == Code.CREATED else f"refused {resp.code}", flush=True)
    while True:
        await asyncio.sleep(0.2)
        print(json.dumps(state), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
