// Microphone capture: the input cut into PCM16 frames for input_audio_buffer.append.
// Each frame carries the context frame of its first sample, so the page can place the
// server's audio_start_ms/audio_end_ms on the same clock as playback.

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.size = options.processorOptions.frameSamples;
    this.frame = new Int16Array(this.size);
    this.filled = 0;
    this.firstFrame = 0;
    this.quiet = new Float32Array(128);
  }

  process(inputs) {
    // No input (the track is starting or stalled): send silence, so the server's timeline
    // stays the page's clock and its audio_*_ms land where the page plays.
    const channel = (inputs[0] && inputs[0][0]) || this.quiet;
    for (let i = 0; i < channel.length; i++) {
      if (this.filled === 0) this.firstFrame = currentFrame + i;
      let x = channel[i];
      // A browser never should, but a NaN would poison the server's filters: it is refused
      // there, so send silence instead of losing the whole append.
      if (!(x === x)) x = 0;
      x = Math.max(-1, Math.min(1, x));
      this.frame[this.filled++] = x < 0 ? x * 0x8000 : x * 0x7fff;
      if (this.filled === this.size) {
        this.port.postMessage({ pcm: this.frame, frame: this.firstFrame }, [this.frame.buffer]);
        this.frame = new Int16Array(this.size);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("parley-capture", CaptureProcessor);
