/**
 * Scope parsing (distribution docs/spec/auth/scope.md, distribution/reference grammar): table-driven, in the style
 * of docker_auth's acl_test. Every rejection is asserted by its `code`, status and exact message.
 */
import { describe, expect, it } from "vitest";
import { RequestError } from "../../src/errors.js";
import {
  canonicalActions,
  formatScope,
  MAX_NAME_LENGTH,
  MAX_SCOPES,
  parseScope,
  parseScopes,
  type Scope,
} from "../../src/policy/scope.js";
import { thrownBy } from "../helpers/errors.js";

const repo = (name: string, ...actions: Scope["actions"]): Scope => ({ type: "repository", name, actions });

describe("parseScopes: accepted requests", () => {
  const cases: Array<{ name: string; values: string[]; want: Scope[] }> = [
    { name: "one scope", values: ["repository:foo:pull"], want: [repo("foo", "pull")] },
    {
      name: "path with several components",
      values: ["repository:library/ubuntu:pull,push"],
      want: [repo("library/ubuntu", "pull", "push")],
    },
    {
      name: "separators . _ __ and runs of -",
      values: ["repository:a.b/c_d/e__f/g--h:pull"],
      want: [repo("a.b/c_d/e__f/g--h", "pull")],
    },
    {
      name: "host:port in the name (harbor#3015)",
      values: ["repository:localhost:5000/foo:pull"],
      want: [repo("localhost:5000/foo", "pull")],
    },
    {
      name: "FQDN host:port in the name",
      values: ["repository:registry.example.com:443/team/app:push,pull"],
      want: [repo("registry.example.com:443/team/app", "pull", "push")],
    },
    {
      name: "resource class is dropped (repository(plugin))",
      values: ["repository(plugin):x:pull"],
      want: [repo("x", "pull")],
    },
    {
      name: "catalog (docker_auth#201)",
      values: ["registry:catalog:*"],
      want: [{ type: "registry", name: "catalog", actions: ["*"] }],
    },
    {
      name: "two scopes in one parameter (docker_auth#268)",
      values: ["repository:a:pull repository:b:push"],
      want: [repo("a", "pull"), repo("b", "push")],
    },
    {
      name: "repeated parameters (moby#20387)",
      values: ["repository:a:pull", "repository:b:push"],
      want: [repo("a", "pull"), repo("b", "push")],
    },
    {
      name: "multiple and leading/trailing spaces",
      values: ["  repository:a:pull    repository:b:push  "],
      want: [repo("a", "pull"), repo("b", "push")],
    },
    {
      name: "cross-repository mount keeps both scopes",
      values: ["repository:team/dst:push,pull", "repository:library/src:pull"],
      want: [repo("team/dst", "pull", "push"), repo("library/src", "pull")],
    },
    { name: "empty scope = login (docker_auth#146)", values: [""], want: [] },
    { name: "no scope parameter = login", values: [], want: [] },
    { name: "only spaces = login", values: ["   "], want: [] },
    { name: "empty values between scopes", values: ["", "repository:a:pull", ""], want: [repo("a", "pull")] },
    {
      name: "duplicates merge, actions unioned",
      values: ["repository:a:pull", "repository:a:push"],
      want: [repo("a", "pull", "push")],
    },
    {
      name: "duplicates merge across resource class",
      values: ["repository(plugin):a:pull repository:a:delete"],
      want: [repo("a", "pull", "delete")],
    },
    {
      name: "merge keeps first-seen order",
      values: ["repository:a:pull repository:b:pull repository:a:delete"],
      want: [repo("a", "pull", "delete"), repo("b", "pull")],
    },
    {
      name: "canonical action order (docker_auth#275)",
      values: ["repository:a:delete,*,push,pull"],
      want: [repo("a", "pull", "push", "delete", "*")],
    },
    { name: "repeated action", values: ["repository:a:pull,pull"], want: [repo("a", "pull")] },
    {
      name: "same name, different type stays apart",
      values: ["repository:catalog:pull registry:catalog:*"],
      want: [repo("catalog", "pull"), { type: "registry", name: "catalog", actions: ["*"] }],
    },
    {
      name: "upper case is allowed only in a domain component (distribution reference grammar)",
      values: ["repository:Registry.Example.com:5000/team/app:pull"],
      want: [repo("Registry.Example.com:5000/team/app", "pull")],
    },
  ];
  it.each(cases)("$name", ({ values, want }) => {
    expect(parseScopes(values)).toEqual(want);
  });

  it("`push,pull` and `pull,push` parse to the same scope", () => {
    expect(parseScopes(["repository:a:push,pull"])).toEqual(parseScopes(["repository:a:pull,push"]));
  });

  it(`accepts exactly MAX_SCOPES (${MAX_SCOPES}) scopes`, () => {
    const values = Array.from({ length: MAX_SCOPES }, (_, i) => `repository:r${i}:pull`);
    expect(parseScopes(values)).toHaveLength(MAX_SCOPES);
  });

  it(`accepts a name of exactly ${MAX_NAME_LENGTH} characters`, () => {
    const name = "a".repeat(MAX_NAME_LENGTH);
    expect(parseScopes([`repository:${name}:pull`])).toEqual([repo(name, "pull")]);
  });

  it("does not mutate the merged scope objects it returned before (fresh objects per call)", () => {
    const first = parseScopes(["repository:a:pull"]);
    parseScopes(["repository:a:pull", "repository:a:push"]);
    expect(first).toEqual([repo("a", "pull")]);
  });
});

describe("parseScopes: rejections", () => {
  const long = "a".repeat(MAX_NAME_LENGTH + 1);
  const cases: Array<{ name: string; values: string[]; message: string }> = [
    {
      name: "no colon",
      values: ["repository"],
      message: 'scope "repository" is not type:name:actions',
    },
    {
      name: "one colon",
      values: ["repository:foo"],
      message: 'scope "repository:foo" is not type:name:actions',
    },
    {
      name: "unknown type",
      values: ["image:foo:pull"],
      message: 'scope "image:foo:pull" has unknown resource type "image"',
    },
    {
      name: "upper-case type",
      values: ["Repository:foo:pull"],
      message: 'scope "Repository:foo:pull" has unknown resource type "Repository"',
    },
    {
      name: "bad resource class",
      values: ["repository(Plugin):foo:pull"],
      message: 'scope "repository(Plugin):foo:pull" has unknown resource type "repository(Plugin)"',
    },
    {
      name: "empty name",
      values: ["repository::pull"],
      message: 'scope "repository::pull" has an empty name',
    },
    {
      name: "upper case in the name",
      values: ["repository:Foo:pull"],
      message: 'scope "repository:Foo:pull" has an invalid repository name',
    },
    {
      name: "upper case in a path component",
      values: ["repository:team/App:pull"],
      message: 'scope "repository:team/App:pull" has an invalid repository name',
    },
    {
      name: "bad character",
      values: ["repository:foo$bar:pull"],
      message: 'scope "repository:foo$bar:pull" has an invalid repository name',
    },
    {
      name: "digest-like @",
      values: ["repository:foo@bar:pull"],
      message: 'scope "repository:foo@bar:pull" has an invalid repository name',
    },
    {
      name: "leading slash",
      values: ["repository:/foo:pull"],
      message: 'scope "repository:/foo:pull" has an invalid repository name',
    },
    {
      name: "trailing slash",
      values: ["repository:foo/:pull"],
      message: 'scope "repository:foo/:pull" has an invalid repository name',
    },
    {
      name: "empty path component",
      values: ["repository:foo//bar:pull"],
      message: 'scope "repository:foo//bar:pull" has an invalid repository name',
    },
    {
      name: "leading separator",
      values: ["repository:-foo:pull"],
      message: 'scope "repository:-foo:pull" has an invalid repository name',
    },
    {
      name: "double dot",
      values: ["repository:foo..bar:pull"],
      message: 'scope "repository:foo..bar:pull" has an invalid repository name',
    },
    {
      name: "two colons in the name",
      values: ["repository:a:1:b:pull"],
      message: 'scope "repository:a:1:b:pull" has an invalid repository name',
    },
    {
      name: "control character is not echoed raw",
      values: ["repository:fo\u0001o:pull"],
      message: 'scope "repository:fo?o:pull" has an invalid repository name',
    },
    {
      name: "registry resource other than catalog",
      values: ["registry:other:*"],
      message: 'scope "registry:other:*": the only registry resource is "catalog"',
    },
    {
      name: "unknown action",
      values: ["repository:foo:pul"],
      message: 'scope "repository:foo:pul" has unknown action "pul"',
    },
    {
      name: "upper-case action",
      values: ["repository:foo:PULL"],
      message: 'scope "repository:foo:PULL" has unknown action "PULL"',
    },
    {
      name: "empty action in list",
      values: ["repository:foo:pull,"],
      message: 'scope "repository:foo:pull," has unknown action ""',
    },
    {
      name: "empty actions",
      values: ["repository:foo:"],
      message: 'scope "repository:foo:" has no actions',
    },
    {
      name: "one bad scope among good ones",
      values: ["repository:a:pull", "repository:b:pull repository:c:fly"],
      message: 'scope "repository:c:fly" has unknown action "fly"',
    },
    {
      name: `more than ${MAX_SCOPES} scopes`,
      values: Array.from({ length: MAX_SCOPES + 1 }, (_, i) => `repository:r${i}:pull`),
      message: `too many scopes (more than ${MAX_SCOPES})`,
    },
    {
      name: `more than ${MAX_SCOPES} scopes even when they merge`,
      values: [Array.from({ length: MAX_SCOPES + 1 }, () => "repository:same:pull").join(" ")],
      message: `too many scopes (more than ${MAX_SCOPES})`,
    },
    {
      name: `name longer than ${MAX_NAME_LENGTH} characters`,
      values: [`repository:${long}:pull`],
      message: `scope name is longer than ${MAX_NAME_LENGTH} characters`,
    },
  ];
  it.each(cases)("$name", ({ values, message }) => {
    const caught = thrownBy(() => parseScopes(values));
    expect(caught).toBeInstanceOf(RequestError);
    const err = caught as RequestError;
    expect(err.code).toBe("invalid_scope");
    expect(err.statusCode).toBe(400);
    expect(err.message).toBe(message);
  });

  it("long attacker input is echoed cut to 120 characters", () => {
    const token = `image:${"x".repeat(300)}:pull`;
    expect(() => parseScope(token)).toThrow(`scope "${token.slice(0, 120)}..." has unknown resource type`);
  });
});

describe("canonicalActions and formatScope", () => {
  it.each([
    [
      ["push", "pull"],
      ["pull", "push"],
    ],
    [
      ["*", "delete", "pull"],
      ["pull", "delete", "*"],
    ],
    [
      ["pull", "pull", "push", "pull"],
      ["pull", "push"],
    ],
    [[], []],
  ] as const)("%j -> %j", (input, want) => {
    expect(canonicalActions(input)).toEqual(want);
  });

  it.each([
    [repo("localhost:5000/foo", "pull", "push"), "repository:localhost:5000/foo:pull,push"],
    [{ type: "registry", name: "catalog", actions: ["*"] } as Scope, "registry:catalog:*"],
  ])("formats %j as %s and parses back", (scope, text) => {
    expect(formatScope(scope)).toBe(text);
    expect(parseScope(text)).toEqual(scope);
  });
});
