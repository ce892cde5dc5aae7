/**
 * nbd/wire-reader: a bounded big-endian cursor over one frame (option payloads, proto.md
 * "Option types"). Every read checks the remaining length first and returns null when the frame
 * is too short, so a decoder can answer NBD_REP_ERR_INVALID instead of reading past the frame.
 */
export class WireReader {
  private cursor = 0;
  constructor(private readonly frame: Buffer) {}

  get remaining(): number {
    return this.frame.length - this.cursor;
  }

  u16(): number | null {
    if (this.remaining < 2) return null;
    const value = this.frame.readUInt16BE(this.cursor);
    this.cursor += 2;
    return value;
  }

  u32(): number | null {
    if (this.remaining < 4) return null;
    const value = this.frame.readUInt32BE(this.cursor);
    this.cursor += 4;
    return value;
  }

  bytes(length: number): Buffer | null {
    if (length < 0 || this.remaining < length) return null;
    const value = this.frame.subarray(this.cursor, this.cursor + length);
    this.cursor += length;
    return value;
  }
}

const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** Decodes a protocol string: valid UTF-8 without NUL (proto.md "Strings"), else null. */
export function decodeString(bytes: Buffer): string | null {
  if (bytes.includes(0)) return null;
  try {
    return utf8Strict.decode(bytes);
  } catch {
    return null;
  }
}
