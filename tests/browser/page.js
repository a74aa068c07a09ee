// The browser side of test_chromium.py: an MSRP client over WebSocket (RFC 7977).
//
// It reads its orders from /config.json, then: checks md5.js against RFC 1321's vectors, opens
// `new WebSocket(url, "msrp")`, AUTHs with Digest (RFC 4976 §9.1: qop=auth, cnonce, nc;
// H(A2) = MD5("AUTH:" + the To-Path URI)), sends the configured SENDs to the TCP peer through
// its token, and answers 200 to every SEND that arrives. Each step is POSTed to /event as
// JSON for the test to check; the page decides nothing about success itself.
"use strict";

const enc = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

// `seq` orders the events: the POSTs may reach the test out of order.
let seq = 0;
function report(kind, fields = {}) {
  seq += 1;
  return fetch("/event", { method: "POST", body: JSON.stringify({ seq, kind, ...fields }) });
}

function b64ToBytes(text) {
  return Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
}

function bytesToB64(bytes) {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function indexOf(bytes, needle, from = 0) {
  outer: for (let i = from; i + needle.length <= bytes.length; i++) {
    for (let j = 0; j < needle.length; j++) if (bytes[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

let tidCounter = 0;
function newTid() {
  tidCounter += 1;
  return `b${Math.random().toString(36).slice(2, 10)}${tidCounter}`;
}

// One MSRP frame as bytes (RFC 4975 §9): start line, headers, optional body, end-line.
function buildFrame(tid, startRest, headers, body = null) {
  const head = [`MSRP ${tid} ${startRest}`, ...headers.map(([k, v]) => `${k}: ${v}`)].join("\r\n");
  const end = enc.encode(`-------${tid}$\r\n`);
  if (body === null) return concat(enc.encode(head + "\r\n"), end);
  return concat(enc.encode(head + "\r\n\r\n"), body, enc.encode("\r\n"), end);
}

// One whole MSRP frame from one WebSocket message (RFC 7977 §5.1: a chunk per message).
function parseFrame(bytes) {
  const firstEol = indexOf(bytes, enc.encode("\r\n"));
  const start = utf8.decode(bytes.subarray(0, firstEol)).split(" ");
  if (start[0] !== "MSRP" || start.length < 3) throw new Error(`bad start line ${start.join(" ")}`);
  const tid = start[1];
  const endLine = enc.encode(`-------${tid}`);
  const endAt = bytes.length - endLine.length - 3;
  if (endAt < 0 || indexOf(bytes, endLine, endAt) !== endAt) throw new Error(`no end-line for ${tid}`);
  const flag = String.fromCharCode(bytes[bytes.length - 3]);
  const content = bytes.subarray(0, endAt);
  const blank = indexOf(content, enc.encode("\r\n\r\n"));
  const headEnd = blank < 0 ? content.length - 2 : blank;
  const body = blank < 0 ? null : content.subarray(blank + 4, content.length - 2);
  const headers = {};
  for (const line of utf8.decode(content.subarray(firstEol + 2, headEnd)).split("\r\n")) {
    const colon = line.indexOf(":");
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  const code = /^\d{3}$/.test(start[2]) ? Number(start[2]) : null;
  return { tid, code, method: code === null ? start[2] : null, flag, headers, body };
}

// The request's reply is awaited by tid; requests go to onRequest.
class MsrpSocket {
  constructor(url, selfUri, onRequest) {
    this.selfUri = selfUri;
    this.onRequest = onRequest;
    this.waiting = new Map();
    this.ws = new WebSocket(url, "msrp");
    this.ws.binaryType = "arraybuffer";
    this.ws.onmessage = (ev) => this.receive(ev.data);
    this.ws.onclose = (ev) => report("close", { code: ev.code, reason: ev.reason, clean: ev.wasClean });
    this.opened = new Promise((resolve, reject) => {
      this.ws.onopen = () => resolve(this.ws.protocol);
      this.ws.onerror = () => reject(new Error(`WebSocket to ${url} failed`));
    });
  }

  receive(data) {
    const text = typeof data === "string";
    const bytes = text ? enc.encode(data) : new Uint8Array(data);
    let frame;
    try {
      frame = parseFrame(bytes);
    } catch (err) {
      report("error", { message: String(err) });
      return;
    }
    frame.text = text;
    frame.wire = bytes.length;
    const waiter = frame.code !== null && this.waiting.get(frame.tid);
    if (waiter) {
      this.waiting.delete(frame.tid);
      waiter(frame);
    } else if (frame.code !== null) {
      report("stray-response", { tid: frame.tid, code: frame.code });
    } else {
      this.onRequest(frame);
    }
  }

  // Sends a request (as a text message when `asText`), resolving with its response.
  request(method, toPath, headers, body = null, asText = false) {
    const tid = newTid();
    const frame = buildFrame(tid, method, [["To-Path", toPath], ["From-Path", this.selfUri], ...headers], body);
    const reply = new Promise((resolve) => this.waiting.set(tid, resolve));
    this.ws.send(asText ? utf8.decode(frame) : frame);
    return reply;
  }

  // A 200 to a request (RFC 4975 §7.2: To-Path is the previous hop, the first From-Path URI).
  answer(frame, code, phrase) {
    const previous = frame.headers["from-path"].split(" ")[0];
    const reply = [["To-Path", previous], ["From-Path", this.selfUri]];
    this.ws.send(buildFrame(frame.tid, `${code} ${phrase}`, reply));
  }
}

function digestParams(header) {
  const params = {};
  for (const m of header.matchAll(/(\w+)="?([^",]*)"?/g)) params[m[1]] = m[2];
  return params;
}

async function authenticate(sock, cfg) {
  const first = await sock.request("AUTH", cfg.relay_uri, []);
  if (first.code !== 401) return first;
  const challenge = digestParams(first.headers["www-authenticate"]);
  const cnonce = bytesToB64(crypto.getRandomValues(new Uint8Array(12)));
  const nc = "00000001";
  const ha1 = md5(`${cfg.user}:${challenge.realm}:${cfg.password}`);
  const ha2 = md5(`AUTH:${cfg.relay_uri}`);
  const response = md5(`${ha1}:${challenge.nonce}:${nc}:${cnonce}:auth:${ha2}`);
  const authorization =
    `Digest username="${cfg.user}", realm="${challenge.realm}", nonce="${challenge.nonce}", ` +
    `uri="${cfg.relay_uri}", response="${response}", qop=auth, nc=${nc}, cnonce="${cnonce}"`;
  return sock.request("AUTH", cfg.relay_uri, [["Authorization", authorization]]);
}

// RFC 1321 §A.5's test suite, plus a multi-byte UTF-8 string over more than one block.
const MD5_VECTORS = [
  ["", "d41d8cd98f00b204e9800998ecf8427e"],
  ["abc", "900150983cd24fb0d6963f7d28e17f72"],
  ["message digest", "f96b697d7cb7938d525a2f31aaf161d0"],
  ["12345678901234567890123456789012345678901234567890123456789012345678901234567890",
   "57edf4a22be3c955ac49da2e2107b67a"],
];

// Chunks of the message being received (RFC 4975 §7.1.1: same Message-ID, contiguous
// Byte-Range, `+` until the last, `$`), by Message-ID.
const chunks = new Map();
let inbox = Promise.resolve();

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (x) => x.toString(16).padStart(2, "0")).join("");
}

// Reports a request as it came (the body itself when small), then, at a message's last
// chunk, the whole message's length and SHA-256; true then.
async function received(frame) {
  const body = frame.body || new Uint8Array(0);
  const messageId = frame.headers["message-id"];
  await report("received", {
    tid: frame.tid,
    method: frame.method,
    flag: frame.flag,
    text: frame.text,
    wire: frame.wire,
    to_path: frame.headers["to-path"],
    from_path: frame.headers["from-path"],
    message_id: messageId,
    byte_range: frame.headers["byte-range"],
    content_type: frame.headers["content-type"],
    length: body.length,
    body: body.length <= 65536 ? bytesToB64(body) : null,
  });
  if (frame.method !== "SEND") return false;
  const parts = chunks.get(messageId) || [];
  parts.push(body);
  chunks.set(messageId, parts);
  if (frame.flag === "+") return false;
  chunks.delete(messageId);
  const whole = concat(...parts);
  await report("message", { message_id: messageId, length: whole.length, sha256: await sha256(whole) });
  return true;
}

async function main() {
  const cfg = await (await fetch("/config.json")).json();
  const wrong = MD5_VECTORS.filter(([text, hex]) => md5(text) !== hex);
  await report("md5", { wrong: wrong.map(([text]) => text), utf8: md5(cfg.md5_probe) });
  let messagesIn = 0;
  const sock = new MsrpSocket(cfg.ws_url, cfg.self_uri, (frame) => {
    if (frame.method === "SEND") sock.answer(frame, 200, "OK");
    // One report after another, in arrival order, though hashing a body is asynchronous.
    inbox = inbox
      .then(async () => {
        messagesIn += (await received(frame)) ? 1 : 0;
        // The closing handshake (RFC 6455 §7.1.2) once the test's messages are all in.
        if (messagesIn === cfg.close_after) sock.ws.close(1000, "done");
      })
      .catch((err) => report("error", { message: String(err) }));
  });
  await report("open", { protocol: await sock.opened });
  const auth = await authenticate(sock, cfg);
  await report("auth", { code: auth.code, use_path: auth.headers["use-path"] || null });
  if (auth.code !== 200) return;
  const toPath = `${auth.headers["use-path"]} ${cfg.peer_uri}`;
  // Both SENDs go out before either answer arrives: the relay must keep their order.
  const replies = cfg.outbound.map((msg) => {
    const body = b64ToBytes(msg.body);
    const headers = [
      ["Message-ID", msg.message_id],
      ["Byte-Range", `1-${body.length}/${body.length}`],
      ["Content-Type", msg.content_type],
    ];
    return sock.request("SEND", toPath, headers, body, msg.as_text);
  });
  for (const [i, reply] of replies.entries()) {
    const frame = await reply;
    await report("sent", { message_id: cfg.outbound[i].message_id, code: frame.code, tid: frame.tid });
  }
}

main().catch((err) => report("error", { message: String(err && err.stack ? err.stack : err) }));
