// The national algorithms the audit page needs and WebCrypto lacks: SM3 (GB/T 32905) and the
// verification of SM2 signatures (GB/T 32918.2, the recommended curve of GB/T 32918.5, the
// signer's ID in Z_A). Verification only: nothing secret passes here, so constant time does not
// matter. A test holds both against GmSSL through the Python modules (tests/test_console_audit.py).
"use strict";
(function () {
  // --- SM3 ---------------------------------------------------------------------------------
  const IV = [0x7380166f, 0x4914b2b9, 0x172442d7, 0xda8a0600,
              0xa96f30bc, 0x163138aa, 0xe38dee4d, 0xb0fb0e4e];

  function rotl(x, n) {
    n %= 32;
    return ((x << n) | (x >>> (32 - n))) >>> 0;
  }

  function p0(x) { return (x ^ rotl(x, 9) ^ rotl(x, 17)) >>> 0; }
  function p1(x) { return (x ^ rotl(x, 15) ^ rotl(x, 23)) >>> 0; }

  function padded(message) {
    const bits = BigInt(message.length) * 8n;
    const length = Math.ceil((message.length + 9) / 64) * 64;
    const block = new Uint8Array(length);
    block.set(message);
    block[message.length] = 0x80;
    new DataView(block.buffer).setBigUint64(length - 8, bits, false);
    return block;
  }

  function compress(v, block, offset) {
    const view = new DataView(block.buffer, block.byteOffset + offset, 64);
    const w = new Array(68);
    for (let j = 0; j < 16; j++) w[j] = view.getUint32(4 * j, false);
    for (let j = 16; j < 68; j++) {
      w[j] = (p1(w[j - 16] ^ w[j - 9] ^ rotl(w[j - 3], 15)) ^ rotl(w[j - 13], 7) ^ w[j - 6]) >>> 0;
    }
    let [a, b, c, d, e, f, g, h] = v;
    for (let j = 0; j < 64; j++) {
      const t = j < 16 ? 0x79cc4519 : 0x7a879d8a;
      const ss1 = rotl((rotl(a, 12) + e + rotl(t, j)) >>> 0, 7);
      const ss2 = (ss1 ^ rotl(a, 12)) >>> 0;
      const ff = j < 16 ? a ^ b ^ c : (a & b) | (a & c) | (b & c);
      const gg = j < 16 ? e ^ f ^ g : (e & f) | (~e & g);
      const tt1 = (ff + d + ss2 + ((w[j] ^ w[j + 4]) >>> 0)) >>> 0;
      const tt2 = (gg + h + ss1 + w[j]) >>> 0;
      d = c; c = rotl(b, 9); b = a; a = tt1;
      h = g; g = rotl(f, 19); f = e; e = p0(tt2);
    }
    return [a, b, c, d, e, f, g, h].map((x, i) => (x ^ v[i]) >>> 0);
  }

  function sm3(message) {
    const block = padded(message);
    let v = IV;
    for (let offset = 0; offset < block.length; offset += 64) v = compress(v, block, offset);
    const digest = new Uint8Array(32);
    const out = new DataView(digest.buffer);
    v.forEach((word, i) => out.setUint32(4 * i, word, false));
    return digest;
  }

  // --- SM2 verification ----------------------------------------------------------------------
  const P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFFn;
  const A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFCn;
  const B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93n;
  const N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123n;
  const G = [0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7n,
             0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0n];
  const DEFAULT_ID = new TextEncoder().encode("1234567812345678");

  function mod(x, m) { const r = x % m; return r < 0n ? r + m : r; }

  function inverse(x, m) { // extended Euclid; x != 0 mod m
    let [a, b, u, v] = [mod(x, m), m, 1n, 0n];
    while (b !== 0n) {
      const q = a / b;
      [a, b] = [b, a - q * b];
      [u, v] = [v, u - q * v];
    }
    return mod(u, m);
  }

  // Affine points; null is the point at infinity.
  function add(p, q) {
    if (p === null) return q;
    if (q === null) return p;
    const [x1, y1] = p, [x2, y2] = q;
    let slope;
    if (x1 === x2) {
      if (mod(y1 + y2, P) === 0n) return null;
      slope = mod((3n * x1 * x1 + A) * inverse(2n * y1, P), P);
    } else {
      slope = mod((y2 - y1) * inverse(x2 - x1, P), P);
    }
    const x3 = mod(slope * slope - x1 - x2, P);
    return [x3, mod(slope * (x1 - x3) - y1, P)];
  }

  function multiply(k, point) {
    let result = null, addend = point;
    while (k > 0n) {
      if (k & 1n) result = add(result, addend);
      addend = add(addend, addend);
      k >>= 1n;
    }
    return result;
  }

  function onCurve([x, y]) {
    return x < P && y < P && mod(y * y - (x * x * x + A * x + B), P) === 0n;
  }

  function toBig(bytes) {
    return bytes.reduce((value, byte) => (value << 8n) | BigInt(byte), 0n);
  }

  function toBytes(value) {
    const bytes = new Uint8Array(32);
    for (let i = 31; i >= 0; i--) { bytes[i] = Number(value & 0xffn); value >>= 8n; }
    return bytes;
  }

  function concat(...parts) {
    const joined = new Uint8Array(parts.reduce((total, part) => total + part.length, 0));
    let offset = 0;
    for (const part of parts) { joined.set(part, offset); offset += part.length; }
    return joined;
  }

  // DER SEQUENCE { INTEGER r, INTEGER s } with short lengths (an SM2 signature); null otherwise.
  function parseSignature(der) {
    if (der.length < 8 || der[0] !== 0x30 || der[1] !== der.length - 2) return null;
    const values = [];
    let offset = 2;
    for (let i = 0; i < 2; i++) {
      if (der[offset] !== 0x02) return null;
      const length = der[offset + 1];
      if (length < 1 || length > 33 || offset + 2 + length > der.length) return null;
      values.push(toBig(der.slice(offset + 2, offset + 2 + length)));
      offset += 2 + length;
    }
    return offset === der.length ? values : null;
  }

  // Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA), GB/T 32918.2 section 5.5.
  function za(publicKey, id) {
    const bits = id.length * 8;
    return sm3(concat(Uint8Array.of(bits >> 8, bits & 0xff), id, toBytes(A), toBytes(B),
                      toBytes(G[0]), toBytes(G[1]), publicKey));
  }

  // Whether `signature` (DER) is the SM2 signature of `message` by `publicKey` (x || y, 64
  // bytes) with the signer's `id`. A malformed key or signature does not verify.
  function sm2Verify(publicKey, message, signature, id = DEFAULT_ID) {
    if (publicKey.length !== 64) return false;
    const point = [toBig(publicKey.slice(0, 32)), toBig(publicKey.slice(32))];
    if (!onCurve(point)) return false;
    const parsed = parseSignature(signature);
    if (parsed === null) return false;
    const [r, s] = parsed;
    if (r < 1n || r >= N || s < 1n || s >= N) return false;
    const t = mod(r + s, N);
    if (t === 0n) return false;
    const e = toBig(sm3(concat(za(publicKey, id), message)));
    const sum = add(multiply(s, G), multiply(t, point));
    if (sum === null) return false;
    return mod(e + sum[0], N) === r;
  }

  window.DutyLinkSM = { sm3, sm2Verify };
})();
