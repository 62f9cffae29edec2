// The camera scanner: getUserMedia, one frame at a time to a decoder, until one code is read
// stably (CodeVote below: the same single code on STABLE_READS frames, and no other code seen
// within the last CONFLICT_FRAMES frames / CONFLICT_MS).
//
// Two decoders: "wasm" (zxing-wasm in a worker, in the page) and "server" (the frame goes to
// the wallet service, which decodes with zxing-cpp). Both were measured
// (bench/bench_wallet_scan.py, docs/performance.md); DEFAULT_DECODER is the faster.

export const DEFAULT_DECODER = "server";
const MAX_SIDE = 960; // frames are scaled down to this many pixels on their longest side

// performance.now() marks for the benchmark (bench/bench_wallet_scan.py); no PIN or code text
export const timings = { decoder: null, cameraStart: null, firstFrame: null, decoded: null, frames: 0, decodeMs: 0 };
if (typeof window !== "undefined") window.safescanTimings = timings;

// A frame may decode only one of two codes in view (a sticker put beside or half over the
// merchant's own): one frame reads the sticker, the next the genuine code. So a code is opened
// only when it was the single code read on STABLE_READS frames with no other code read in
// between, and no other code (nor two codes in one frame) was read within the last
// CONFLICT_FRAMES scanned frames or CONFLICT_MS milliseconds, whichever reaches further back.
// Frames that read nothing neither count nor break the run (a blurred or glared frame).
export const STABLE_READS = 3;
export const CONFLICT_FRAMES = 15;
export const CONFLICT_MS = 2000;

export class CodeVote {
  constructor({ stableReads = STABLE_READS, conflictFrames = CONFLICT_FRAMES, conflictMs = CONFLICT_MS } = {}) {
    this.stableReads = stableReads;
    this.conflictFrames = conflictFrames;
    this.conflictMs = conflictMs;
    this.reset();
  }

  reset() {
    this.frame = 0;
    this.seen = new Map(); // text -> {frame, at}: the last frame that read it
    this.several = null; // {frame, at}: the last frame that read more than one code
    this.runText = null;
    this.run = 0;
  }

  recent(mark, now) {
    return mark !== null && (this.frame - mark.frame < this.conflictFrames || now - mark.at < this.conflictMs);
  }

  // One scanned frame's decoded texts, at time `now` (ms). Returns {open, twoCodes}: the text
  // to open (or null), and whether two codes were seen recently (the user is told).
  feed(texts, now) {
    this.frame += 1;
    const mark = { frame: this.frame, at: now };
    for (const text of texts) this.seen.set(text, mark);
    if (texts.length > 1) this.several = mark;
    for (const [text, m] of this.seen) if (!this.recent(m, now)) this.seen.delete(text);
    if (texts.length === 1) {
      if (texts[0] === this.runText) this.run += 1;
      else { this.runText = texts[0]; this.run = 1; }
    } else if (texts.length > 1) {
      this.runText = null;
      this.run = 0;
    }
    const twoCodes = this.seen.size > 1 || this.recent(this.several, now);
    const open = !twoCodes && this.run >= this.stableReads ? this.runText : null;
    return { open, twoCodes };
  }
}

function wasmDecoder() {
  const worker = new Worker("/static/scan-worker.js");
  let next = 0;
  const waiting = new Map();
  worker.onmessage = (ev) => {
    const cb = waiting.get(ev.data.id);
    waiting.delete(ev.data.id);
    if (cb) cb(ev.data);
  };
  worker.onerror = (ev) => {
    ev.preventDefault();
    for (const cb of waiting.values()) cb({ error: "the decoder failed to load" });
    waiting.clear();
  };
  return {
    name: "wasm",
    decode(image) {
      const id = ++next;
      return new Promise((resolve, reject) => {
        waiting.set(id, (msg) => (msg.error ? reject(new Error(msg.error)) : resolve(msg.texts)));
        worker.postMessage(
          { id, width: image.width, height: image.height, buffer: image.data.buffer },
          [image.data.buffer],
        );
      });
    },
    close() { worker.terminate(); },
  };
}

let sharedWasm = null;

// Start the wasm decoder's worker (download + compile) before the camera is asked for.
export function prewarm(decoder) {
  if (decoder !== "server" && !sharedWasm) sharedWasm = wasmDecoder();
}

function serverDecoder(api) {
  return {
    name: "server",
    async decode(image) {
      const { width, height, data } = image;
      const gray = new Uint8Array(width * height);
      for (let i = 0, j = 0; i < gray.length; i++, j += 4) {
        gray[i] = (data[j] * 77 + data[j + 1] * 150 + data[j + 2] * 29) >> 8;
      }
      const doc = await api("/api/decode", {
        method: "POST",
        body: gray,
        headers: {
          "Content-Type": "application/octet-stream",
          "X-Frame-Width": String(width),
          "X-Frame-Height": String(height),
        },
      });
      return doc.texts;
    },
    close() {},
  };
}

export class Scanner {
  // onText(text): a single code was read stably (scanning stops); onStatus(text, hint):
  // progress. `decoder`: "wasm", "server", or an object with decode(image) -> texts (tests).
  constructor({ video, api, decoder, onText, onStatus, vote }) {
    this.video = video;
    this.api = api;
    if (decoder && typeof decoder === "object") {
      this.decoderName = decoder.name || "custom";
      this.decoder = decoder;
    } else {
      this.decoderName = decoder === "wasm" ? "wasm" : "server";
      this.decoder = null;
    }
    this.vote = new CodeVote(vote || {});
    this.onText = onText;
    this.onStatus = onStatus;
    this.running = false;
    this.stream = null;
    this.canvas = document.createElement("canvas");
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
  }

  async start() {
    if (this.running) return;
    this.running = true;
    timings.decoder = this.decoderName;
    timings.cameraStart = performance.now();
    timings.firstFrame = null;
    timings.decoded = null;
    timings.frames = 0;
    timings.decodeMs = 0;
    this.vote.reset();
    if (!this.decoder) {
      if (this.decoderName === "server") this.decoder = serverDecoder(this.api);
      else { prewarm("wasm"); this.decoder = sharedWasm; }
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: false,
        video: { facingMode: { ideal: "environment" }, width: { ideal: 1280 }, height: { ideal: 720 } },
      });
    } catch (err) {
      this.running = false;
      const denied = err && err.name === "NotAllowedError";
      this.onStatus(
        denied ? "The camera is not allowed for this page." : "No camera could be started.",
        "Use a photo of the code or its text below.",
      );
      return;
    }
    if (!this.running) { this.stopTracks(); return; }
    this.video.srcObject = this.stream;
    await this.video.play().catch(() => {});
    this.onStatus("Point the camera at the payment code", "");
    this.loop();
  }

  stop() {
    this.running = false;
    this.stopTracks();
  }

  stopTracks() {
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.stream = null;
    this.video.srcObject = null;
  }

  grab() {
    const v = this.video;
    const scale = Math.min(1, MAX_SIDE / Math.max(v.videoWidth, v.videoHeight));
    const w = Math.round(v.videoWidth * scale);
    const h = Math.round(v.videoHeight * scale);
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.ctx.drawImage(v, 0, 0, w, h);
    return this.ctx.getImageData(0, 0, w, h);
  }

  nextFrame() {
    return new Promise((resolve) => {
      if (this.video.requestVideoFrameCallback) {
        const timer = setTimeout(resolve, 100); // a still picture sends no new frames
        this.video.requestVideoFrameCallback(() => { clearTimeout(timer); resolve(); });
      } else {
        setTimeout(resolve, 33);
      }
    });
  }

  async loop() {
    while (this.running) {
      const v = this.video;
      if (v.readyState >= 2 && v.videoWidth > 0) {
        if (timings.firstFrame === null) timings.firstFrame = performance.now();
        let texts = [];
        const started = performance.now();
        try {
          texts = await this.decoder.decode(this.grab());
          timings.decodeMs += performance.now() - started;
        } catch (err) {
          this.onStatus("Looking for a payment code…", `The decoder hiccuped (${err.message}); still scanning.`);
        }
        if (!this.running) return;
        timings.frames += 1;
        v.dataset.frames = String(timings.frames);
        const { open, twoCodes } = this.vote.feed(texts, performance.now());
        v.dataset.twoCodes = twoCodes ? "1" : "";
        if (open !== null) {
          timings.decoded = performance.now();
          this.stop();
          this.onText(open);
          return;
        }
        this.onStatus(
          "Looking for a payment code…",
          twoCodes ? "More than one code is in view: show only the one to pay." : "",
        );
      }
      await this.nextFrame();
    }
  }
}
