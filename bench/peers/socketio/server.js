// The Socket.IO 4.8 peer of the realtime benchmark (bench/run.py).
//
// It does what our server does in the broadcast scenarios, with Socket.IO's usual means:
// - clients connect over WebSocket only (`transports: ["websocket"]`, no HTTP long-polling
//   upgrade dance) and are joined to the room named in the handshake query (`?room=NAME`,
//   default "bench") — one room is the broadcast channel, a room per client is "many channels";
// - `POST /publish` with `{"room": NAME, "payload": ANY}` or `{"events": [{"room", "payload"}, …]}`
//   emits each payload to its room as the event "ev" (`42["ev",PAYLOAD]` on the wire), which is
//   the same payload bytes the load generator sends to our /api/notify;
// - `GET /stats` answers `{"clients": N, "rss": BYTES}`.
//
// Usage: node server.js PORT [HOST]. Prints "listening on http://HOST:PORT" when ready.

"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 3000);
const host = process.argv[3] || "127.0.0.1";

let io;

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

const httpServer = http.createServer(async (req, res) => {
  try {
    if (req.method === "POST" && req.url === "/publish") {
      const body = JSON.parse(await readBody(req));
      const events = body.events || [{ room: body.room, payload: body.payload }];
      for (const e of events) {
        io.to(e.room || "bench").emit("ev", e.payload);
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ emitted: events.length }));
      return;
    }
    if (req.method === "GET" && req.url === "/stats") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ clients: io.engine.clientsCount, rss: process.memoryUsage().rss }));
      return;
    }
    res.writeHead(404);
    res.end();
  } catch (err) {
    res.writeHead(400, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: String(err) }));
  }
});

io = new Server(httpServer, {
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  httpCompression: false,
  // The same heartbeat as our server's WebSocket ping interval.
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize: 1e6,
});

io.on("connection", (socket) => {
  const room = socket.handshake.query.room || "bench";
  socket.join(room);
});

httpServer.maxConnections = 1 << 20;
httpServer.listen(port, host, () => {
  const addr = httpServer.address();
  console.log(`listening on http://${addr.address}:${addr.port}`);
});

function stop() {
  io.close();
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
