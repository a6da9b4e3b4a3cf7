/** Capturing what a function throws, for assertions on the error itself. */
import { expect } from "vitest";
import { ConfigError } from "../../src/errors.js";

/**
 * The error `fn` throws.
 * @throws {Error} "expected an error" when `fn` returns
 */
export function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected an error");
}

/**
 * The problems of the {@link ConfigError} `fn` throws; fails the test when it throws anything else.
 * @throws {Error} "expected a ConfigError" when `fn` returns
 */
export function configProblems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("expected a ConfigError");
}
