// The Realtime WebSocket from a browser: the token, the handshake and why it failed.
//
// A browser can set no header on a WebSocket, and a refused handshake shows the page only
// "closed, 1006". So the page first asks the same path with a plain GET (there it can send
// Authorization and read the status), then connects with the token as a subprotocol:
// "parley-token.<base64url>". The token never goes into a URL.

export class ConnectError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // "unreachable" | "token" | "full" | "origin" | "refused"
  }
}

export function base64FromBytes(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

export function bytesFromBase64(b64) {
  const text = atob(b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

function tokenSubprotocol(token) {
  const b64 = base64FromBytes(new TextEncoder().encode(token));
  return "parley-token." + b64.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

const PATH = "/v1/realtime";

async function preflight(token) {
  let reply;
  try {
    reply = await fetch(PATH, {
      headers: token ? { Authorization: "Bearer " + token } : {},
      cache: "no-store",
    });
  } catch (err) {
    throw new ConnectError(
      "unreachable",
      `Cannot reach the Parley server at ${location.host}: is "serve" still running?`,
    );
  }
  if (reply.ok) return;
  const said = (await reply.text()).trim();
  if (reply.status === 401) {
    throw new ConnectError(
      "token",
      token ? "The server refused this token: check it and press Talk again."
        : "The server needs a token: enter it in the token field and press Talk again.",
    );
  }
  if (reply.status === 503) {
    const wait = reply.headers.get("Retry-After") || "a few";
    throw new ConnectError("full", `The server is busy (${said}). Try again in ${wait} s.`);
  }
  if (reply.status === 403) throw new ConnectError("origin", said);
  throw new ConnectError("refused", `The server refused the session (${reply.status}): ${said}`);
}

export class RealtimeConnection {
  constructor(onEvent, onLost) {
    this.onEvent = onEvent;
    this.onLost = onLost; // (code, reason): the connection ended without our asking
    this.ws = null;
    this.closing = false;
  }

  async open(token) {
    await preflight(token);
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + PATH;
    const protocols = ["realtime"];
    if (token) protocols.push(tokenSubprotocol(token));
    const ws = new WebSocket(url, protocols);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onclose = (e) =>
        reject(new ConnectError("refused", `The server closed the session (${e.code} ${e.reason}).`));
    });
    ws.onmessage = (e) => this.onEvent(JSON.parse(e.data));
    ws.onclose = (e) => {
      this.ws = null;
      if (!this.closing) this.onLost(e.code, e.reason);
    };
    this.ws = ws;
    this.closing = false;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(event) {
    if (this.isOpen) this.ws.send(JSON.stringify(event));
  }

  close() {
    this.closing = true;
    if (this.ws) {
      this.ws.onmessage = null;
      this.ws.close(1000, "the user stopped");
    }
    this.ws = null;
  }
}
