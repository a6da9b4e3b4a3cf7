/**
 * The frozen clock of the unit tests: 2026-11-30T12:00:00Z. Tests pass it (or `NOW_S`) wherever the code
 * takes a clock, so expiry is decided by arithmetic, never by the wall clock.
 */

/** The frozen time, epoch milliseconds. */
export const NOW = Date.UTC(2026, 10, 30, 12, 0, 0);

/** {@link NOW} in epoch seconds. */
export const NOW_S = NOW / 1000;
