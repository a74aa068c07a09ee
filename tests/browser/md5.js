// MD5 (RFC 1321) over bytes, for MSRP Digest AUTH (RFC 4976 §9.1 uses RFC 2617 with MD5).
// Browsers' SubtleCrypto has no MD5, so the page carries its own; page.js checks it against
// RFC 1321's test vectors before it trusts it with a digest.
"use strict";

const MD5_SHIFTS = [
  7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
  5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
  4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
  6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];
// K[i] = floor(|sin(i + 1)| * 2^32) (RFC 1321 §3.4); exact in IEEE doubles.
const MD5_K = Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32) | 0);

function md5Bytes(bytes) {
  const n = bytes.length;
  // Padding (RFC 1321 §3.1, §3.2): 0x80, zeros, then the bit length, 64-bit little-endian.
  const size = Math.ceil((n + 9) / 64) * 64;
  const buf = new Uint8Array(size);
  buf.set(bytes);
  buf[n] = 0x80;
  const view = new DataView(buf.buffer);
  view.setUint32(size - 8, (n * 8) >>> 0, true);
  view.setUint32(size - 4, Math.floor(n / 0x20000000), true);
  const state = [0x67452301, 0xefcdab89 | 0, 0x98badcfe | 0, 0x10325476];
  for (let off = 0; off < size; off += 64) {
    let [a, b, c, d] = state;
    for (let i = 0; i < 64; i++) {
      let f, g;
      if (i < 16) {
        f = (b & c) | (~b & d);
        g = i;
      } else if (i < 32) {
        f = (d & b) | (~d & c);
        g = (5 * i + 1) % 16;
      } else if (i < 48) {
        f = b ^ c ^ d;
        g = (3 * i + 5) % 16;
      } else {
        f = c ^ (b | ~d);
        g = (7 * i) % 16;
      }
      f = (f + a + MD5_K[i] + view.getInt32(off + 4 * g, true)) | 0;
      a = d;
      d = c;
      c = b;
      b = (b + ((f << MD5_SHIFTS[i]) | (f >>> (32 - MD5_SHIFTS[i])))) | 0;
    }
    state[0] = (state[0] + a) | 0;
    state[1] = (state[1] + b) | 0;
    state[2] = (state[2] + c) | 0;
    state[3] = (state[3] + d) | 0;
  }
  const out = new DataView(new ArrayBuffer(16));
  state.forEach((word, i) => out.setInt32(4 * i, word, true));
  return Array.from(new Uint8Array(out.buffer), (x) => x.toString(16).padStart(2, "0")).join("");
}

// MD5 of a string's UTF-8 bytes, as hashlib.md5(text.encode()) on the relay's side.
function md5(text) {
  return md5Bytes(new TextEncoder().encode(text));
}
