// Decodes camera frames with zxing-wasm (vendored, served from this origin) off the page's thread.
/* global ZXingWASM */
importScripts("/static/vendor/zxing-wasm/zxing-reader.iife.js");

const BASE = "/static/vendor/zxing-wasm/";
const ready = ZXingWASM.prepareZXingModule({
  overrides: {
    locateFile: (path, prefix) => (path.endsWith(".wasm") ? BASE + path : prefix + path),
  },
  fireImmediately: true,
});
const OPTIONS = { formats: ["QRCode"], tryHarder: true, maxNumberOfSymbols: 2 };
// one decode of a blank frame as soon as the module is ready: the first camera frame then
// runs warm code
const warm = ready.then(() =>
  ZXingWASM.readBarcodes(new ImageData(new Uint8ClampedArray(320 * 240 * 4).fill(200), 320, 240), OPTIONS),
).catch(() => []);

self.onmessage = async (ev) => {
  const { id, width, height, buffer } = ev.data;
  try {
    await ready;
    await warm;
    const image = new ImageData(new Uint8ClampedArray(buffer), width, height);
    const found = await ZXingWASM.readBarcodes(image, OPTIONS);
    self.postMessage({ id, texts: found.filter((r) => r.isValid).map((r) => r.text) });
  } catch (err) {
    self.postMessage({ id, error: String((err && err.message) || err) });
  }
};
