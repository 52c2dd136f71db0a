// The page: one Realtime session, the microphone streaming into it, the replies playing,
// and what the user should see of it. Turn-taking and barge-in are the server's; the page
// plays what it is sent, stops at once when the server says the user took the turn, and
// tells the server how much of the reply was heard.

import { AudioIO, MicrophoneError } from "./audio.js";
import { Conversation } from "./conversation.js";
import { ConnectError, RealtimeConnection, base64FromBytes, bytesFromBase64 } from "./realtime.js";

const RATE = 16000; // Parley's own rate: nothing is resampled on the server
// A reply whose audio stopped this long ago is paused (the server holds it while it
// decides whether the user is cutting in); shorter gaps are the network's jitter.
const PAUSED_AFTER_MS = 120;
const INTERRUPTED_SHOWN_MS = 1500;

const $ = (id) => document.getElementById(id);

// Figures for the tests and the curious, in the console: window.parley
const stats = {
  state: "off",
  states: ["off"], // every state shown, in order
  appendsSent: 0,
  samplesPlayed: 0,
  peakOut: 0,
  peakInDb: -100,
  turns: [], // {latencyMs} per reply that played, {bargeInMs} per reply cut
  gapsMs: [], // each time playback ran dry mid-reply and started again: how long it was dry
  problems: [],
};
window.parley = stats;

class Page {
  constructor() {
    this.conversation = new Conversation($("conversation"));
    this.conn = null;
    this.audio = null;
    this.connecting = false;
    this.reset();
    $("talk").onclick = () => (this.conn ? this.stop() : this.start());
    $("reconnect").onclick = () => this.start();
    $("connect").onsubmit = (e) => {
      e.preventDefault(); // Enter in the token field: talk, do not reload the page
      if (!this.conn) this.start();
    };
    $("settings").onsubmit = (e) => {
      e.preventDefault();
      this.applySettings();
    };
    const form = $("settings");
    form.threshold.oninput = () => (form.threshold_shown.value = form.threshold.value);
    setInterval(() => this.render(), 50);
  }

  reset() {
    this.micStart = null; // context frame of the first sample sent: the server's 0 ms
    this.userEnd = null; // frame where the user's last turn ended (speech_stopped)
    this.userEntry = null;
    this.response = null;
    this.awaiting = false;
    this.playing = false;
    this.lastDry = null; // frame and time at which playback last ran out of audio
    this.dryAt = 0;
    this.interruptedUntil = 0;
  }

  // ---------------------------------------------------------------- connection

  async start() {
    if (this.connecting || this.conn) return;
    this.problem(null);
    $("reconnect").hidden = true;
    $("talk").disabled = true;
    this.connecting = true;
    this.reset();
    // Each session has its own connection and audio; whatever either reports after it
    // was replaced (a late event, a late worklet message) is dropped.
    // A state can last less than the 50 ms between renders (a reply ready at the turn's
    // end thinks for a few ms): the badge follows each event and player message as well.
    const conn = new RealtimeConnection(
      (event) => conn === this.conn && (this.receive(event), this.render()),
      (code, reason) => this.lost(conn, code, reason),
    );
    const audio = new AudioIO(RATE);
    audio.onCapture = (pcm, frame) => audio === this.audio && this.captured(pcm, frame);
    audio.onPlayer = (msg) => audio === this.audio && (this.fromPlayer(msg), this.render());
    let opened = false;
    try {
      const token = checkedToken($("token").value);
      await conn.open(token);
      this.conn = conn;
      opened = true;
      conn.send({
        type: "session.update",
        session: {
          type: "realtime",
          audio: {
            input: { format: { type: "audio/pcm", rate: RATE } },
            output: { format: { type: "audio/pcm", rate: RATE } },
          },
        },
      });
      this.audio = audio;
      await audio.start();
      if (this.conn !== conn) {
        await audio.stop(); // the connection went while the browser asked for the microphone
        return;
      }
      $("talk").textContent = "Stop";
      $("talk").classList.add("on");
    } catch (err) {
      // Opened, then lost or stopped while the audio started: that has been said already.
      const replaced = opened && this.conn !== conn;
      conn.close();
      await audio.stop();
      if (this.conn === conn) this.conn = null;
      if (this.audio === audio) this.audio = null;
      if (replaced) return;
      const known = err instanceof ConnectError || err instanceof MicrophoneError;
      this.problem(known ? err.message : `Could not start: ${err.message || err}`);
    } finally {
      this.connecting = false;
      $("talk").disabled = false;
    }
  }

  async stop() {
    const conn = this.conn;
    const audio = this.audio;
    this.conn = null;
    this.audio = null;
    conn.close();
    if (audio) await audio.stop();
    this.reset();
    $("talk").textContent = "Talk";
    $("talk").classList.remove("on");
  }

  async lost(conn, code, reason) {
    if (conn !== this.conn) return; // an old connection's end is not this session's
    // The reply that was playing is gone with its session: stop it and do not replay it.
    if (this.response) this.response.entry.cut("✂ connection lost");
    const audio = this.audio;
    this.conn = null;
    this.audio = null;
    if (audio) await audio.stop();
    this.reset();
    $("talk").textContent = "Talk";
    $("talk").classList.remove("on");
    $("reconnect").hidden = false;
    this.problem(`Connection lost (${code}${reason ? ": " + reason : ""}). Reconnect to go on in a new session.`);
  }

  captured(pcm, frame) {
    if (!this.conn) return;
    if (this.micStart === null) this.micStart = frame;
    this.conn.send({
      type: "input_audio_buffer.append",
      audio: base64FromBytes(new Uint8Array(pcm.buffer)),
    });
    stats.appendsSent++;
  }

  frameAt(ms) {
    return this.micStart + Math.round((ms * RATE) / 1000);
  }

  // ---------------------------------------------------------------- server events

  receive(event) {
    switch (event.type) {
      case "session.created":
      case "session.updated":
        this.showSettings(event.session, event.type === "session.updated");
        break;
      case "input_audio_buffer.speech_started":
        this.userStarted(event);
        break;
      case "input_audio_buffer.speech_stopped":
        this.userEnd = this.frameAt(event.audio_end_ms);
        if (this.userEntry) {
          const seconds = (event.audio_end_ms - this.userStartMs) / 1000;
          this.userEntry.text = `you spoke (${seconds.toFixed(1)} s)`;
        }
        break;
      case "input_audio_buffer.committed":
        this.awaiting = true;
        this.userEntry = null;
        break;
      case "response.created":
        this.awaiting = false;
        this.response = {
          id: event.response.id,
          itemId: null,
          entry: this.conversation.add("agent", ""),
          userEnd: this.userEnd,
          audioDone: false,
          done: false,
          drained: false,
          started: false,
        };
        this.userEnd = null;
        break;
      case "response.output_audio_transcript.delta":
        if (this.isCurrent(event)) this.response.entry.append(event.delta);
        break;
      case "response.output_audio.delta":
        // Nothing of a reply the user cut is played, even if some of it was on its way.
        if (this.isCurrent(event) && !this.response.drained) {
          this.response.itemId = event.item_id;
          const bytes = bytesFromBase64(event.delta);
          this.audio.play(this.response.id, new Int16Array(bytes.buffer));
        }
        break;
      case "response.output_audio.done":
        if (this.isCurrent(event)) {
          this.response.audioDone = true;
          this.response.itemId = event.item_id;
          this.audio.end(this.response.id);
        }
        break;
      case "response.done":
        this.responseDone(event.response);
        break;
      case "error":
        this.serverError(event.error);
        break;
    }
  }

  isCurrent(event) {
    return this.response !== null && event.response_id === this.response.id;
  }

  async userStarted(event) {
    this.userEntry = this.conversation.add("user", "you are speaking…");
    this.userStartMs = event.audio_start_ms;
    const reply = this.response;
    if (reply === null || reply.drained) return;
    // The server sends speech_started over a reply only once the user has taken the
    // turn (a backchannel only pauses it), so the reply is over: stop what is buffered
    // and tell the server how much of it was heard.
    const { conn, audio } = this;
    reply.drained = true;
    if (!reply.started) {
      // Cut before a sound of it played: no stop time to show, and none of it was heard.
      audio.clear();
      if (reply.itemId !== null) {
        conn.send({ type: "conversation.item.truncate", item_id: reply.itemId, content_index: 0, audio_end_ms: 0 });
      }
      this.finishIfOver();
      return;
    }
    const onset = this.frameAt(event.audio_start_ms);
    const wasPlaying = this.playing;
    const cleared = await audio.clear();
    if (cleared === null || this.conn !== conn) return; // stopped or lost meanwhile
    this.playing = false;
    const stopped = wasPlaying || this.lastDry === null ? cleared.frame : this.lastDry;
    const bargeInMs = Math.max(0, ((stopped - onset) * 1000) / RATE);
    reply.entry.note(`stopped in ${Math.round(bargeInMs)} ms`);
    stats.turns.push({ bargeInMs });
    const played = cleared.played[reply.id] || 0;
    if (reply.itemId !== null) {
      conn.send({
        type: "conversation.item.truncate",
        item_id: reply.itemId,
        content_index: 0,
        audio_end_ms: Math.floor((played * 1000) / RATE),
      });
    }
    this.finishIfOver();
  }

  responseDone(response) {
    const reply = this.response;
    if (reply === null || reply.id !== response.id) return;
    reply.done = true;
    const item = response.output[0];
    const kept = item && item.content[0] ? item.content[0].transcript : null;
    if (kept !== null && kept !== undefined) reply.entry.text = kept;
    if (response.status === "cancelled") {
      // Cut by the server for any reason (a barge-in has stopped playback already): what
      // is still buffered of it must not play.
      if (!reply.drained) this.audio.clear();
      reply.entry.cut();
      this.interruptedUntil = performance.now() + INTERRUPTED_SHOWN_MS;
      reply.drained = true;
    } else if (response.status === "failed") {
      reply.entry.cut("✂ failed");
      this.problem("The reply failed on the server; speak again to go on.");
      reply.drained = true;
    }
    if (!reply.started) reply.drained = true;
    this.finishIfOver();
  }

  finishIfOver() {
    const reply = this.response;
    if (reply !== null && reply.done && reply.drained) this.response = null;
  }

  serverError(error) {
    const where = error.param && error.param.startsWith("session.") ? "settings" : "problem";
    const text = `The server said: ${error.message}`;
    stats.problems.push(text);
    if (where === "settings") $("settings-said").textContent = text;
    else this.problem(text);
  }

  // ---------------------------------------------------------------- playback

  fromPlayer(msg) {
    const reply = this.response;
    switch (msg.type) {
      case "playing":
        this.playing = true;
        if (reply !== null && reply.started && this.lastDry !== null) {
          stats.gapsMs.push(((msg.frame - this.lastDry) * 1000) / RATE);
        }
        break;
      case "started":
        this.playing = true;
        if (reply !== null && msg.id === reply.id && !reply.started) {
          reply.started = true;
          if (reply.userEnd !== null && this.micStart !== null) {
            const latencyMs = ((msg.frame - reply.userEnd) * 1000) / RATE;
            reply.entry.note(`answered in ${Math.round(latencyMs)} ms`);
            stats.turns.push({ latencyMs });
          }
        }
        break;
      case "dry":
        this.playing = false;
        this.lastDry = msg.frame;
        this.dryAt = performance.now();
        if (reply !== null && reply.audioDone) {
          reply.drained = true;
          this.finishIfOver();
        }
        break;
      case "progress":
        stats.samplesPlayed = msg.played;
        stats.peakOut = msg.peak;
        break;
    }
  }

  // ---------------------------------------------------------------- settings

  showSettings(session, applied) {
    const form = $("settings");
    const td = session.audio.input.turn_detection;
    if (td) {
      form.type.value = td.type;
      if (td.silence_duration_ms) form.silence_duration_ms.value = td.silence_duration_ms;
      if (td.threshold) {
        form.threshold.value = td.threshold;
        form.threshold_shown.value = td.threshold;
      }
      if (td.eagerness) form.eagerness.value = td.eagerness;
    }
    if (applied) {
      const how = td ? td.type + (td.eagerness ? ` (${td.eagerness})` : "") : "manual";
      $("settings-said").textContent = `applied: ${how}`;
    }
  }

  applySettings() {
    const form = $("settings");
    const td = { type: form.type.value, threshold: Number(form.threshold.value) };
    if (td.type === "semantic_vad") td.eagerness = form.eagerness.value;
    else td.silence_duration_ms = Number(form.silence_duration_ms.value);
    $("settings-said").textContent = "";
    if (!this.conn) {
      $("settings-said").textContent = "press Talk first: settings belong to a session";
      return;
    }
    this.conn.send({
      type: "session.update",
      session: { type: "realtime", audio: { input: { turn_detection: td } } },
    });
  }

  // ---------------------------------------------------------------- screen

  problem(text) {
    const line = $("problem");
    line.hidden = text === null;
    line.textContent = text || "";
    if (text !== null) stats.problems.push(text);
  }

  state() {
    if (this.connecting) return "connecting";
    if (!this.conn) return "off";
    if (performance.now() < this.interruptedUntil) return "interrupted";
    const reply = this.response;
    if (reply !== null && !reply.drained) {
      if (!reply.started) return "thinking";
      if (!this.playing && performance.now() - this.dryAt >= PAUSED_AFTER_MS) return "paused";
      return "speaking";
    }
    return this.awaiting ? "thinking" : "listening";
  }

  render() {
    const state = this.state();
    stats.state = state;
    const badge = $("state");
    if (badge.dataset.state !== state) {
      stats.states.push(state);
      badge.dataset.state = state;
      badge.textContent = state;
    }
    const levels = this.audio && this.audio.context ? this.audio.levels() : { input: -100, output: -100 };
    stats.peakInDb = Math.max(stats.peakInDb, levels.input);
    $("level-in").style.width = `${meter(levels.input)}%`;
    $("level-out").style.width = `${meter(levels.output)}%`;
  }
}

// The server refuses tokens with spaces at either end, and fetch would drop them from the
// header but not from the subprotocol: a pasted token's stray space is not part of it.
function checkedToken(raw) {
  const token = raw.trim();
  if (!/^[\x20-\x7e]*$/.test(token)) {
    throw new ConnectError("token", "A token is printable ASCII: check what was pasted into the token field.");
  }
  return token;
}

function meter(db) {
  return Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
}

new Page();
