/**
 * Docker registry scopes (distribution docs/spec/auth/scope.md).
 *
 * Grammar: `type[(class)]:name:actions`. The name may itself contain one `:` (a registry host port, as in
 * `localhost:5000/foo`), so the type is what precedes the first `:`, the actions what follows the last
 * `:`, and the name everything between. Several scopes arrive as repeated parameters and/or separated by
 * spaces inside one parameter; an empty scope is a login and yields no entry.
 */
import { ACTIONS, type Action } from "../config/schema.js";
import { safeEcho as echo, RequestError } from "../errors.js";

/** One requested resource scope. */
export interface Scope {
  /** `repository` or `registry` (a resource class such as `repository(plugin)` is dropped). */
  type: "repository" | "registry";
  /** The resource name, byte for byte as requested. */
  name: string;
  /** Requested actions, de-duplicated, in canonical order (pull, push, delete, *). */
  actions: Action[];
}

/** Most scopes accepted in one request (a cross-repository mount needs 2; a few more are harmless). */
export const MAX_SCOPES = 32;
/** Longest accepted repository name (distribution's reference grammar allows 255). */
export const MAX_NAME_LENGTH = 255;

// distribution reference grammar (distribution/reference `regexp.go`): path components of lower-case
// alphanumerics separated by ., _, __ or runs of -; optionally prefixed by a domain with an optional port
// (harbor#3015).
const COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const DOMAIN =
  "(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?/)";
const REPOSITORY_NAME = new RegExp(`^${DOMAIN}?${COMPONENT}(?:/${COMPONENT})*$`);
const TYPE = /^([a-z]+)(?:\(([a-z0-9]+)\))?$/;

const ORDER: Record<Action, number> = { pull: 0, push: 1, delete: 2, "*": 3 };

/** Sorts and de-duplicates actions into canonical order. */
export function canonicalActions(actions: Iterable<Action>): Action[] {
  return [...new Set(actions)].sort((a, b) => ORDER[a] - ORDER[b]);
}

function invalid(message: string): RequestError {
  return new RequestError("invalid_scope", message);
}

/**
 * Parses one scope token (no spaces).
 * @throws {RequestError} `invalid_scope` for a wrong shape, unknown type or action, or invalid name
 */
export function parseScope(token: string): Scope {
  const first = token.indexOf(":");
  const last = token.lastIndexOf(":");
  if (first < 0 || first === last) throw invalid(`scope "${echo(token)}" is not type:name:actions`);
  const rawType = token.slice(0, first);
  const name = token.slice(first + 1, last);
  const rawActions = token.slice(last + 1);
  const t = TYPE.exec(rawType);
  if (!t || (t[1] !== "repository" && t[1] !== "registry")) {
    throw invalid(`scope "${echo(token)}" has unknown resource type "${echo(rawType, 40)}"`);
  }
  const type = t[1] as Scope["type"];
  if (name === "") throw invalid(`scope "${echo(token)}" has an empty name`);
  if (name.length > MAX_NAME_LENGTH) throw invalid(`scope name is longer than ${MAX_NAME_LENGTH} characters`);
  if (type === "repository" && !REPOSITORY_NAME.test(name)) {
    throw invalid(`scope "${echo(token)}" has an invalid repository name`);
  }
  if (type === "registry" && name !== "catalog") {
    throw invalid(`scope "${echo(token)}": the only registry resource is "catalog"`);
  }
  if (rawActions === "") throw invalid(`scope "${echo(token)}" has no actions`);
  const actions: Action[] = [];
  for (const a of rawActions.split(",")) {
    if (!(ACTIONS as readonly string[]).includes(a))
      throw invalid(`scope "${echo(token)}" has unknown action "${echo(a, 20)}"`);
    actions.push(a as Action);
  }
  return { type, name, actions: canonicalActions(actions) };
}

/**
 * Parses every scope of a request: each value may hold several space-separated scopes; empty values and
 * empty tokens are logins and are skipped. Scopes naming the same resource are merged (actions unioned),
 * keeping first-seen order.
 * @param values the raw `scope` parameter values (repeated parameters, in order)
 * @throws {RequestError} `invalid_scope` for any invalid token or more than {@link MAX_SCOPES} scopes
 */
export function parseScopes(values: readonly string[]): Scope[] {
  const merged = new Map<string, Scope>();
  let count = 0;
  for (const value of values) {
    for (const token of value.split(" ")) {
      if (token === "") continue;
      if (++count > MAX_SCOPES) throw invalid(`too many scopes (more than ${MAX_SCOPES})`);
      const scope = parseScope(token);
      const key = `${scope.type}\u0000${scope.name}`;
      const prev = merged.get(key);
      if (prev) prev.actions = canonicalActions([...prev.actions, ...scope.actions]);
      else merged.set(key, scope);
    }
  }
  return [...merged.values()];
}

/** Renders a scope back to `type:name:actions` (canonical action order). */
export function formatScope(scope: Scope): string {
  return `${scope.type}:${scope.name}:${scope.actions.join(",")}`;
}
