// Verifying the audit log in the browser, trusting nothing the console relays: RFC 9162 Merkle
// hashing and inclusion proofs (as gateway/audit/merkle.py), C2SP signed notes and C2SP verifier
// keys (as gateway/audit/note.py), tlog-checkpoints. The crypto profile follows the key: an
// Ed25519 key's log hashes with SHA-256 (WebCrypto does the hashing and the signatures), an SM2
// key's (the national profile) with SM3, its signatures checked by sm.js. Nothing else is used,
// so the page's checks are only as good as these files, which a test holds against the Python
// modules. Sizes and indexes are BigInt: uint64 in the proofs, and JavaScript's bit operators
// are 32-bit.
"use strict";
(function () {
  const ED25519 = 0x01; // the signature type byte in key ids and key strings
  // The national profile's signature type: 0xff then its name (note.py's SM2 KeyType).
  const SM2 = new Uint8Array([0xff, ...new TextEncoder().encode("dutylink.sm2-sm3")]);
  const DASH = "\u2014 "; // em dash and space start every signature line
  const DECIMAL = /^(0|[1-9][0-9]{0,19})$/;
  const encoder = new TextEncoder();

  function fail(reason) {
    throw new Error(reason);
  }

  function concat(...parts) {
    const joined = new Uint8Array(parts.reduce((total, part) => total + part.length, 0));
    let offset = 0;
    for (const part of parts) { joined.set(part, offset); offset += part.length; }
    return joined;
  }

  function equal(a, b) {
    return a.length === b.length && a.every((byte, i) => byte === b[i]);
  }

  function toBase64(bytes) {
    let text = "";
    for (const byte of bytes) text += String.fromCharCode(byte);
    return btoa(text);
  }

  // Standard padded base64, canonical only (as note.py): one value, one spelling.
  function fromBase64(what, text) {
    let raw;
    try { raw = atob(text); } catch (error) { fail(`${what} is not base64`); }
    const bytes = Uint8Array.from(raw, (char) => char.charCodeAt(0));
    if (toBase64(bytes) !== text) fail(`${what} is not canonical padded base64`);
    return bytes;
  }

  function hex(bytes) {
    return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  async function sm3(bytes) { return window.DutyLinkSM.sm3(bytes); }

  // H(0x00 || data): the prefix keeps a leaf from passing for an interior node. H is SHA-256,
  // or SM3 for a log of the national profile.
  function leafHash(data, hash = sha256) { return hash(concat(Uint8Array.of(0), data)); }
  function nodeHash(left, right, hash = sha256) { return hash(concat(Uint8Array.of(1), left, right)); }

  // The largest power of two strictly less than size (size > 1), as merkle._split.
  function split(size) {
    let k = 1n;
    while (k * 2n < size) k *= 2n;
    return k;
  }

  async function subtree(leaves, start, end, hash) {
    if (end - start === 1n) return leaves[Number(start)];
    const middle = start + split(end - start);
    return nodeHash(await subtree(leaves, start, middle, hash), await subtree(leaves, middle, end, hash), hash);
  }

  // MTH (RFC 9162 section 2.1.1) of these leaf hashes; used by the tests, not by the pages.
  async function merkleRoot(leaves, hash = sha256) {
    if (leaves.length === 0) return hash(new Uint8Array(0));
    return subtree(leaves, 0n, BigInt(leaves.length), hash);
  }

  // The audit path of leaf `index` (RFC 9162 section 2.1.3.1); for the tests.
  async function inclusionProof(leaves, index, start = 0n, end = BigInt(leaves.length), hash = sha256) {
    index = BigInt(index);
    if (end - start === 1n) return [];
    const middle = start + split(end - start);
    if (start + index < middle) {
      return [...await inclusionProof(leaves, index, start, middle, hash), await subtree(leaves, middle, end, hash)];
    }
    return [...await inclusionProof(leaves, start + index - middle, middle, end, hash), await subtree(leaves, start, middle, hash)];
  }

  // RFC 9162 section 2.1.3.2: the root that `proof` leads to from `leaf` at `index` in a tree
  // of `size`; throws with the reason when the proof cannot be one for that position.
  async function rootFromInclusionProof(index, size, leaf, proof, hash = sha256) {
    index = BigInt(index); size = BigInt(size);
    if (index >= size) fail(`index ${index} is not in a tree of size ${size}`);
    for (const node of proof) if (node.length !== 32) fail("a proof hash is not 32 bytes");
    let fn = index, sn = size - 1n, r = leaf;
    for (const p of proof) {
      if (sn === 0n) fail(`the proof has ${proof.length} hashes, too many for index ${index} of ${size}`);
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r, hash);
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        r = await nodeHash(r, p, hash);
      }
      fn >>= 1n; sn >>= 1n;
    }
    if (sn !== 0n) fail(`the proof has ${proof.length} hashes, too few for index ${index} of ${size}`);
    return r;
  }

  function checkName(name) {
    if (!name || /[+\s]/.test(name)) fail(`key name ${JSON.stringify(name)} must be non-empty, without spaces or '+'`);
  }

  // The key id: the key type's hash (SHA-256, SM3 for SM2) of name, newline, type and key.
  async function keyId(name, type, publicKey, hash) {
    return (await hash(concat(encoder.encode(name + "\n"), type, publicKey))).slice(0, 4);
  }

  // A C2SP verifier key `name+<8 hex key id>+base64(type || key)`: 0x01 and a 32-byte Ed25519
  // key, or the SM2 type and a 64-byte key (x || y). The key id must be the one the name and
  // key give (a pasted key with a typo fails here, not as a bad signature). The key's profile
  // gives the log's hash.
  async function parseKey(text) {
    if (!String(text || "").trim()) fail("no verifier key for this log: paste it above");
    const parts = String(text).trim().split("+");
    if (parts.length < 3) fail("the key must look like name+keyid+base64");
    const [name, id] = parts;
    checkName(name);
    if (!/^[0-9a-f]{8}$/.test(id)) fail(`key id ${JSON.stringify(id)} is not 8 lowercase hex digits`);
    const raw = fromBase64("the key", parts.slice(2).join("+"));
    let key;
    if (raw.length === 33 && raw[0] === ED25519) {
      key = { type: "Ed25519", typeBytes: Uint8Array.of(ED25519), publicKey: raw.slice(1), hash: sha256 };
    } else if (raw.length === SM2.length + 64 && equal(raw.slice(0, SM2.length), SM2)) {
      key = { type: "SM2", typeBytes: SM2, publicKey: raw.slice(SM2.length), hash: sm3 };
    } else {
      fail("neither an Ed25519 key (type 0x01 then 32 bytes) nor an SM2 key (type 0xff 'dutylink.sm2-sm3' then 64 bytes)");
    }
    const computed = hex(await keyId(name, key.typeBytes, key.publicKey, key.hash));
    if (computed !== id) fail(`key id ${id} does not match the computed ${computed}`);
    return { name, keyId: id, ...key };
  }

  // A signed note's text (through its last newline before the blank line) and signature lines.
  function splitNote(note) {
    const cut = note.lastIndexOf("\n\n");
    if (cut < 0) fail("the note has no blank line between its text and its signatures");
    const block = note.slice(cut + 2);
    if (!block.endsWith("\n")) fail("the note does not end with a newline");
    const signatures = block.slice(0, -1).split("\n").map((line, number) => {
      if (!line.startsWith(DASH)) fail(`signature line ${number + 1} does not start with an em dash`);
      const rest = line.slice(DASH.length);
      const space = rest.indexOf(" ");
      if (space < 0) fail(`signature line ${number + 1} has no space after the key name`);
      const raw = fromBase64(`signature line ${number + 1}`, rest.slice(space + 1));
      if (raw.length < 5) fail(`signature line ${number + 1} is too short`);
      return { name: rest.slice(0, space), keyId: hex(raw.slice(0, 4)), signature: raw.slice(4) };
    });
    return { text: note.slice(0, cut + 1), signatures };
  }

  // Verifies the note with the key (as note.open_note with one trusted key): a bad signature
  // by that key, or none by it, fails. Returns the signed text.
  async function verifyNote(note, key) {
    const { text, signatures } = splitNote(note);
    const mine = signatures.filter((s) => s.name === key.name && s.keyId === key.keyId);
    if (mine.length === 0) {
      const by = signatures.map((s) => `${s.name}+${s.keyId}`).join(", ");
      fail(`no signature by ${key.name}+${key.keyId} (signed by: ${by || "nobody"})`);
    }
    const message = encoder.encode(text);
    let good;
    if (key.type === "SM2") {
      good = (signature) => window.DutyLinkSM.sm2Verify(key.publicKey, message, signature);
    } else {
      const imported = await crypto.subtle.importKey("raw", key.publicKey, { name: "Ed25519" }, false, ["verify"]);
      good = (signature) => crypto.subtle.verify("Ed25519", imported, signature, message);
    }
    for (const { signature } of mine) {
      if (!await good(signature)) fail(`the signature by ${key.name}+${key.keyId} does not verify`);
    }
    return text;
  }

  // A tlog-checkpoint: origin, decimal size, base64 root hash, extension lines.
  function parseCheckpoint(text) {
    if (!text.endsWith("\n")) fail("the checkpoint does not end with a newline");
    const lines = text.slice(0, -1).split("\n");
    if (lines.length < 3) fail("the checkpoint needs origin, size and root hash lines");
    const [origin, size, root, ...extensions] = lines;
    if (!origin) fail("the checkpoint's origin is empty");
    if (!DECIMAL.test(size)) fail(`tree size ${JSON.stringify(size)} is not decimal without leading zeros`);
    const rootHash = fromBase64("the root hash", root);
    if (rootHash.length !== 32) fail(`the root hash is ${rootHash.length} bytes, expected 32`);
    return { origin, size: BigInt(size), rootHash, extensions };
  }

  // Runs `steps` in order, each a [id, async function returning a success text]; a thrown
  // error is that check's failure. Later steps still run: each result is shown.
  async function run(steps) {
    const results = [];
    for (const [id, step] of steps) {
      try {
        results.push({ id, ok: true, reason: await step() });
      } catch (error) {
        results.push({ id, ok: false, reason: error.message || String(error) });
      }
    }
    return results;
  }

  // The checks of one signed checkpoint {note, tree_size, root_hash} with the key string:
  // the key, the signature, then the checkpoint (origin is the key's name; the console's
  // stated size and root are the signed ones). `context.checkpoint` gets the parsed one.
  function checkpointSteps(signed, keyText, context) {
    return [
      ["key", async () => {
        context.key = await parseKey(keyText);
        return `${context.key.name}+${context.key.keyId}`;
      }],
      ["signature", async () => {
        if (!context.key) fail("no usable key");
        await verifyNote(signed.note, context.key);
        return `${context.key.type} by ${context.key.name}+${context.key.keyId}`;
      }],
      ["checkpoint", async () => {
        const text = splitNote(signed.note).text; // checked even unsigned: say what is wrong
        const checkpoint = parseCheckpoint(text);
        context.checkpoint = checkpoint;
        if (context.key && checkpoint.origin !== context.key.name) {
          fail(`origin ${checkpoint.origin} is not the key's name ${context.key.name}`);
        }
        if (String(checkpoint.size) !== String(signed.tree_size)) {
          fail(`the console says size ${signed.tree_size}, the note says ${checkpoint.size}`);
        }
        if (signed.root_hash !== undefined && !equal(fromBase64("the stated root", signed.root_hash), checkpoint.rootHash)) {
          fail("the console's stated root hash differs from the note's");
        }
        return `${checkpoint.origin}, size ${checkpoint.size}, root ${hex(checkpoint.rootHash).slice(0, 16)}…`;
      }],
    ];
  }

  async function verifyCheckpoint(signed, keyText) {
    return run(checkpointSteps(signed, keyText, {}));
  }

  // The checks of one entry as /api/audit/proof relays it ({index, data, tree_size, proof,
  // checkpoint}): the checkpoint's, then the inclusion of H(0x00 || data) in its root.
  async function verifyEntry(relayed, keyText) {
    const context = {};
    const steps = checkpointSteps(relayed.checkpoint, keyText, context);
    steps.push(["inclusion", async () => {
      if (!context.checkpoint) fail("no checkpoint to prove against");
      if (String(relayed.tree_size) !== String(context.checkpoint.size)) {
        fail(`the proof is for size ${relayed.tree_size}, the checkpoint's is ${context.checkpoint.size}`);
      }
      const hash = context.key ? context.key.hash : sha256;
      const leaf = await leafHash(fromBase64("the entry", relayed.data), hash);
      const proof = relayed.proof.map((node, i) => fromBase64(`proof hash ${i}`, node));
      const root = await rootFromInclusionProof(relayed.index, context.checkpoint.size, leaf, proof, hash);
      if (!equal(root, context.checkpoint.rootHash)) {
        fail(`the root recomputed from entry ${relayed.index} (${hex(root).slice(0, 16)}…) is not the signed root`);
      }
      return `entry ${relayed.index} is in the signed tree of ${context.checkpoint.size}`;
    }]);
    return run(steps);
  }

  window.DutyLinkVerify = {
    toBase64, fromBase64, hex, sha256, sm3, leafHash, nodeHash, merkleRoot, inclusionProof,
    rootFromInclusionProof, parseKey, splitNote, verifyNote, parseCheckpoint,
    verifyCheckpoint, verifyEntry,
  };
})();
