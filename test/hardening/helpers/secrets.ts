/**
 * A ledger of secrets a test handed to the service (service-account tokens, passwords, refresh tokens,
 * exchange credentials, minted registry tokens), and a scanner that finds any 20-character piece of one
 * in a text (a log, an error body).
 *
 * For a JWT only the payload and signature segments are scanned: every RS256 token of one issuer starts
 * with the same header bytes, so a header piece says nothing about which token leaked (and an error may
 * legitimately echo a `kid`). Anything else is scanned whole.
 */

/** Length of the pieces looked for. */
const PIECE = 20;

/** The secrets of a test and every {@link PIECE}-character window of them. */
export class SecretLedger {
  readonly #secrets: string[] = [];
  readonly #windows = new Map<string, number>();

  /** Records `secret` and returns it. */
  add(secret: string): string {
    const index = this.#secrets.length;
    this.#secrets.push(secret);
    const parts = secret.split(".");
    const scanned =
      parts.length >= 3 && parts.every((p) => /^[A-Za-z0-9_-]*$/.test(p)) ? parts.slice(1) : [secret];
    for (const part of scanned) {
      for (let i = 0; i + PIECE <= part.length; i++) {
        const w = part.slice(i, i + PIECE);
        if (!this.#windows.has(w)) this.#windows.set(w, index);
      }
    }
    return secret;
  }

  /** How many secrets were recorded. */
  get size(): number {
    return this.#secrets.length;
  }

  /**
   * The first piece of a recorded secret found in `text`, with the secret's index, or `undefined`.
   * Linear in the length of `text`.
   */
  findIn(text: string): { piece: string; secret: number } | undefined {
    for (let i = 0; i + PIECE <= text.length; i++) {
      const piece = text.slice(i, i + PIECE);
      const secret = this.#windows.get(piece);
      if (secret !== undefined) return { piece, secret };
    }
    return undefined;
  }
}
