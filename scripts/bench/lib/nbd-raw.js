// A raw NBD client for the abuse benchmark: connects over TCP or a Unix socket, does the fixed
// newstyle handshake (optionally structured replies) up to NBD_OPT_GO, then writes whatever
// request frames the caller builds; replies are read only when the caller asks. Every wait is
// bounded.
'use strict';
const net = require('node:net');

const NBD_OPT_GO = 7;
const NBD_OPT_STRUCTURED_REPLY = 8;
const NBD_REP_ACK = 1;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3 };
const FLAG = { FUA: 1, DF: 4 };
const WAIT_MS = 30000;

function optionFrame(option, payload = Buffer.alloc(0)) {
  const header = Buffer.alloc(16);
  header.write('IHAVEOPT', 0, 'latin1');
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(payload.length, 12);
  return Buffer.concat([header, payload]);
}

function goPayload(name) {
  const bytes = Buffer.from(name, 'utf8');
  const payload = Buffer.alloc(4 + bytes.length + 2);
  payload.writeUInt32BE(bytes.length, 0);
  bytes.copy(payload, 4);
  return payload;
}

function requestFrame(type, flags, cookie, offset, length) {
  const frame = Buffer.alloc(28);
  frame.writeUInt32BE(REQUEST_MAGIC, 0);
  frame.writeUInt16BE(flags, 4);
  frame.writeUInt16BE(type, 6);
  frame.writeBigUInt64BE(BigInt(cookie), 8);
  frame.writeBigUInt64BE(BigInt(offset), 16);
  frame.writeUInt32BE(length, 24);
  return frame;
}

class RawClient {
  constructor(socket) {
    this.socket = socket;
    this.chunks = [];
    this.length = 0;
    this.waiter = null;
    this.isEnded = false;
    socket.on('data', (chunk) => {
      this.chunks.push(chunk);
      this.length += chunk.length;
      this.wake();
    });
    const end = () => {
      this.isEnded = true;
      this.wake();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  static connect(target) {
    return new Promise((resolve, reject) => {
      const socket = net.connect(target, () => {
        socket.off('error', reject);
        socket.setNoDelay(true);
        resolve(new RawClient(socket));
      });
      socket.once('error', reject);
    });
  }

  wake() {
    const waiter = this.waiter;
    this.waiter = null;
    if (waiter) waiter();
  }

  async read(n) {
    const deadline = Date.now() + WAIT_MS;
    while (this.length < n) {
      if (this.isEnded) throw new Error(`connection ended after ${this.length} of ${n} bytes`);
      if (Date.now() > deadline) throw new Error(`timeout waiting for ${n} bytes`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 1000);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.length = rest.length;
    return out;
  }

  write(bytes) {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** Fixed newstyle, NO_ZEROES, then GO; `structured` asks for structured replies first. */
  async handshake(name, { structured = false } = {}) {
    await this.read(18);
    this.write(Buffer.from([0, 0, 0, 3]));
    if (structured) {
      this.write(optionFrame(NBD_OPT_STRUCTURED_REPLY));
      await this.readOptionReplies();
    }
    this.write(optionFrame(NBD_OPT_GO, goPayload(name)));
    const replies = await this.readOptionReplies();
    if (replies[replies.length - 1] !== NBD_REP_ACK) throw new Error(`GO refused: ${replies}`);
  }

  async readOptionReplies() {
    const types = [];
    for (;;) {
      const header = await this.read(20);
      const type = header.readUInt32BE(12);
      await this.read(header.readUInt32BE(16));
      types.push(type);
      if (type === NBD_REP_ACK || type >= 0x80000000) return types;
    }
  }

  async readSimpleReply(dataLength) {
    const header = await this.read(16);
    if (header.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw new Error('bad reply magic');
    const errno = header.readUInt32BE(4);
    if (errno === 0 && dataLength > 0) await this.read(dataLength);
    return errno;
  }

  pause() {
    this.socket.pause();
  }

  destroy() {
    this.socket.destroy();
  }
}

module.exports = { CMD, FLAG, RawClient, optionFrame, requestFrame };
