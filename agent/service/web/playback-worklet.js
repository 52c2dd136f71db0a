// Reply playback with a small jitter buffer. The server paces audio at real time, one
// delta per append, so a few tens of ms absorb the network's jitter; more would only add
// to the response latency and to the time a cut takes to be heard.
//
// In:  {type: "audio", id, pcm: Int16Array}   reply audio, in order
//      {type: "end", id}                      no more audio for this reply: play it all
//      {type: "clear"}                        stop now (within this render quantum)
// Out: {type: "started", id, frame}           a reply's first sample reached the speaker
//      {type: "playing", frame}               playback (re)started after running dry
//      {type: "dry", frame}                   playback ran out of audio at this frame
//      {type: "cleared", frame, played}       after "clear": samples played per reply id
//      {type: "progress", played, peak}       now and then, for the page's counters

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.prebuffer = options.processorOptions.prebufferSamples;
    this.queue = []; // {id, data: Float32Array, offset}
    this.buffered = 0;
    this.playing = false;
    this.ended = new Set();
    this.played = new Map(); // reply id -> samples played
    this.total = 0;
    this.peak = 0;
    this.quanta = 0;
    this.port.onmessage = (e) => this.receive(e.data);
  }

  receive(msg) {
    if (msg.type === "audio") {
      const data = new Float32Array(msg.pcm.length);
      for (let i = 0; i < data.length; i++) data[i] = msg.pcm[i] / 0x8000;
      this.queue.push({ id: msg.id, data, offset: 0 });
      this.buffered += data.length;
    } else if (msg.type === "end") {
      this.ended.add(msg.id);
      // Ran dry before the end was known: say so now, or the page waits for it forever.
      if (!this.playing && !this.queue.some((chunk) => chunk.id === msg.id)) {
        this.port.postMessage({ type: "dry", frame: currentFrame });
      }
    } else if (msg.type === "clear") {
      this.queue = [];
      this.buffered = 0;
      this.playing = false;
      this.port.postMessage({
        type: "cleared",
        frame: currentFrame,
        played: Object.fromEntries(this.played),
      });
    }
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.queue.length > 0) {
      // Start once the buffer holds enough, or when the reply has nothing more to come.
      const head = this.queue[0];
      if (this.buffered >= this.prebuffer || this.ended.has(head.id)) {
        this.playing = true;
        this.port.postMessage({ type: "playing", frame: currentFrame });
      }
    }
    let i = 0;
    while (this.playing && i < out.length && this.queue.length > 0) {
      const head = this.queue[0];
      const before = this.played.get(head.id);
      if (before === undefined) {
        this.played.set(head.id, 0);
        this.port.postMessage({ type: "started", id: head.id, frame: currentFrame + i });
      }
      const n = Math.min(out.length - i, head.data.length - head.offset);
      for (let k = 0; k < n; k++) {
        const x = head.data[head.offset + k];
        out[i + k] = x;
        const a = Math.abs(x);
        if (a > this.peak) this.peak = a;
      }
      head.offset += n;
      i += n;
      this.buffered -= n;
      this.total += n;
      this.played.set(head.id, this.played.get(head.id) + n);
      if (head.offset === head.data.length) this.queue.shift();
    }
    if (this.playing && this.queue.length === 0) {
      this.playing = false;
      this.port.postMessage({ type: "dry", frame: currentFrame + i });
    }
    out.fill(0, i);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (++this.quanta % 16 === 0) {
      this.port.postMessage({ type: "progress", played: this.total, peak: this.peak });
    }
    return true;
  }
}

registerProcessor("parley-playback", PlaybackProcessor);
