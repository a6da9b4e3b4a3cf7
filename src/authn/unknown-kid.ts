/**
 * The unknown-`kid` budget of one cluster: a token presenting a `kid` the loaded key set lacks may cause
 * a re-fetch (a rotation must be picked up within seconds), but a flood of garbage `kid`s must never
 * cause a fetch storm. Re-fetches draw from a token bucket (burst `unknownKidBurst`, one more every
 * `unknownKidRefillSeconds`), and a `kid` still unknown after a fresh fetch is remembered as unknown for
 * `unknownKidRefillSeconds`.
 */

/** Most `kid`s remembered as unknown at once; beyond it the memory starts over. */
const MAX_REMEMBERED = 10_000;

/** Token bucket and memory of unknown `kid`s. Times are epoch milliseconds. */
export class UnknownKidBudget {
  readonly #burst: number;
  readonly #refillMs: number;
  #tokens: number;
  #tokensAt: number;
  readonly #unknown = new Map<string, number>();

  /**
   * @param burst re-fetches allowed at once (`unknownKidBurst`)
   * @param refillSeconds seconds per re-fetch regained, and how long an unknown `kid` is remembered
   * @param now the current time, epoch ms (the bucket starts full)
   */
  constructor(burst: number, refillSeconds: number, now: number) {
    this.#burst = burst;
    this.#refillMs = refillSeconds * 1000;
    this.#tokens = burst;
    this.#tokensAt = now;
  }

  /** How long an unknown `kid` is remembered, ms. */
  get rememberMs(): number {
    return this.#refillMs;
  }

  /** Takes one re-fetch from the bucket; false when it is empty. */
  take(now: number): boolean {
    const gained = Math.floor((now - this.#tokensAt) / this.#refillMs);
    if (gained > 0) {
      this.#tokens = Math.min(this.#burst, this.#tokens + gained);
      this.#tokensAt += gained * this.#refillMs;
    }
    if (this.#tokens >= this.#burst) this.#tokensAt = now;
    if (this.#tokens <= 0) return false;
    this.#tokens--;
    return true;
  }

  /** Whether `kid` was found unknown and is still remembered at `now`. */
  isUnknown(kid: string, now: number): boolean {
    const until = this.#unknown.get(kid);
    return until !== undefined && until > now;
  }

  /** Remembers `kid` as unknown from `now` for {@link rememberMs}. */
  remember(kid: string, now: number): void {
    if (this.#unknown.size > MAX_REMEMBERED) this.#unknown.clear();
    this.#unknown.set(kid, now + this.#refillMs);
  }

  /** Forgets every unknown `kid` (a new key set may have them). */
  forget(): void {
    this.#unknown.clear();
  }
}
