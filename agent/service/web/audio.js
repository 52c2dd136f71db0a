// The page's audio: the microphone with the browser's echo cancellation, noise suppression
// and gain control on (a speaker beside the microphone is what they are for), capture and
// playback worklets on one AudioContext clock, and the levels shown on screen.

export class MicrophoneError extends Error {}

const PREBUFFER_MS = 40;

export class AudioIO {
  constructor(rate) {
    this.rate = rate;
    this.context = null;
    this.onCapture = () => {};
    this.onPlayer = () => {};
    this.waiting = []; // resolvers of clear()
  }

  async start() {
    if (!navigator.mediaDevices) {
      throw new MicrophoneError(
        "The browser offers the microphone only to secure pages: open this page at http://127.0.0.1:PORT/ or http://localhost:PORT/, or serve it over HTTPS.",
      );
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (err) {
      if (err.name === "NotAllowedError") {
        throw new MicrophoneError(
          "Microphone access was denied. Allow it for this page (the icon in the address bar) and press Talk again.",
        );
      }
      if (err.name === "NotFoundError") throw new MicrophoneError("No microphone was found.");
      throw new MicrophoneError(`The microphone could not be opened: ${err.message}`);
    }
    // The context runs at the session's rate, so the browser resamples the microphone
    // and the server resamples nothing.
    this.stream = stream;
    const ctx = new AudioContext({ sampleRate: this.rate, latencyHint: "interactive" });
    this.context = ctx;
    let mic;
    try {
      mic = ctx.createMediaStreamSource(stream);
    } catch (err) {
      if (err.name !== "NotSupportedError") throw err;
      throw new MicrophoneError(
        `This browser cannot take the microphone at ${this.rate} Hz (Firefox cannot yet); use Chromium or Chrome.`,
      );
    }
    await ctx.audioWorklet.addModule("/web/capture-worklet.js");
    await ctx.audioWorklet.addModule("/web/playback-worklet.js");
    this.inLevel = ctx.createAnalyser();
    this.outLevel = ctx.createAnalyser();
    const capture = new AudioWorkletNode(ctx, "parley-capture", {
      numberOfOutputs: 0,
      processorOptions: { frameSamples: Math.round(this.rate / 100) }, // 10 ms appends
    });
    this.player = new AudioWorkletNode(ctx, "parley-playback", {
      numberOfInputs: 0,
      outputChannelCount: [1],
      processorOptions: { prebufferSamples: Math.round((this.rate * PREBUFFER_MS) / 1000) },
    });
    mic.connect(this.inLevel);
    mic.connect(capture);
    this.player.connect(this.outLevel);
    this.outLevel.connect(ctx.destination);
    capture.port.onmessage = (e) => this.onCapture(e.data.pcm, e.data.frame);
    this.player.port.onmessage = (e) => {
      if (e.data.type === "cleared") this.waiting.splice(0).forEach((done) => done(e.data));
      this.onPlayer(e.data);
    };
    await ctx.resume();
  }

  play(id, pcm) {
    this.player.port.postMessage({ type: "audio", id, pcm }, [pcm.buffer]);
  }

  end(id) {
    this.player.port.postMessage({ type: "end", id });
  }

  // Stops playback; resolves with {frame, played: {id: samples}} once the worklet stopped,
  // or with null if the audio was shut down first.
  clear() {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.player.port.postMessage({ type: "clear" });
    });
  }

  get frame() {
    return this.context ? Math.round(this.context.currentTime * this.rate) : 0;
  }

  levels() {
    return { input: rmsDb(this.inLevel), output: rmsDb(this.outLevel) };
  }

  async stop() {
    this.waiting.splice(0).forEach((done) => done(null)); // clear() answers: stopped
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = null;
    const ctx = this.context;
    this.context = null; // only one call ever closes it
    if (ctx) await ctx.close();
  }
}

function rmsDb(analyser) {
  if (!analyser) return -100;
  const data = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(data);
  let sum = 0;
  for (const x of data) sum += x * x;
  const rms = Math.sqrt(sum / data.length);
  return rms > 0 ? Math.max(-100, 20 * Math.log10(rms)) : -100;
}
