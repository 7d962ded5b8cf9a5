"""The bare floor of the benchmark: an ASGI app that accepts every socket and drops its frames.

daphne runs it in place of TeamTrack (`python -m teamtrack.serve loadtest.bare:application`,
daphne on uvloop as every replica), behind the same nginx, so that `python -m loadtest.bench` can
set each relay's CPU and sustained rate beside what receiving a frame costs at all. GET /frames answers how many frames this process received.
"""

frames_received = 0


async def application(scope, receive, send):
    if scope["type"] == "websocket":
        await websocket(receive, send)
    elif scope["type"] == "http":
        await receive()
        body = str(frames_received).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


async def websocket(receive, send):
    global frames_received
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (await receive())["type"] == "websocket.receive":
        frames_received += 1
