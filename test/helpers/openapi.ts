/**
 * The API contract (`openapi/openapi.yaml`) as a test oracle: `expectMatchesSpec(method, path, response)`
 * checks a real response (from `app.inject`, or anything with a status, headers and a text body) against
 * the response the spec documents for that operation and status: the status must be documented, the
 * Content-Type must be one the spec lists, a JSON body must validate against its schema (JSON Schema
 * 2020-12 via ajv, formats via ajv-formats) and every required response header must be present and
 * valid. A path the spec does not list must answer the documented 404 (`DockerNotFound`).
 *
 * Every checked (method, path, status) is recorded in {@link specCoverage}, so a suite can assert that
 * each documented response was seen at least once.
 */
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { expect } from "vitest";
import { loadOpenApiDocument } from "../../src/routes/openapi.js";

// ajv-formats is CommonJS with `exports.default`; under NodeNext the default import is the module object.
/** ajv-formats' plugin (its CommonJS default export, unwrapped). */
export const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ??
  addFormatsModule) as unknown as (ajv: Ajv2020) => Ajv2020;

/** The response shape the checker needs (`app.inject`'s Response fits). */
export interface SpecResponse {
  statusCode: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: string;
}

type Json = Record<string, unknown>;

/** The parsed contract (the same document `GET /openapi.json` serves). */
export const spec = loadOpenApiDocument() as Json & { paths: Record<string, Record<string, Json>> };

const SPEC_ID = "urn:registry-token-exchange:openapi";
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema(spec, SPEC_ID);
const validators = new Map<string, ValidateFunction>();

/** `METHOD /path STATUS` of every response checked so far (STATUS as documented: `200`, `4XX`, ...). */
export const specCoverage = new Set<string>();

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/** Every documented response as `METHOD /path STATUS`. */
export function documentedResponses(): string[] {
  const out: string[] = [];
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const method of METHODS) {
      const op = item[method] as { responses?: Json } | undefined;
      for (const status of Object.keys(op?.responses ?? {}))
        out.push(`${method.toUpperCase()} ${path} ${status}`);
    }
  }
  return out;
}

function pointerSegment(s: string): string {
  return s.replaceAll("~", "~0").replaceAll("/", "~1");
}

/** Follows a local `$ref` (`#/components/...`) to the object and its JSON pointer. */
function deref(value: Json, pointer: string): { value: Json; pointer: string } {
  let v = value;
  let p = pointer;
  for (let i = 0; i < 10 && typeof v.$ref === "string"; i++) {
    const ref = v.$ref as string;
    expect(ref.startsWith("#/"), `only local $refs are supported, got ${ref}`).toBe(true);
    p = ref;
    v = ref
      .slice(2)
      .split("/")
      .map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"))
      .reduce<Json>((o, k) => o[k] as Json, spec);
    expect(v, `dangling $ref ${ref}`).toBeDefined();
  }
  return { value: v, pointer: p };
}

function validatorFor(pointer: string): ValidateFunction {
  let v = validators.get(pointer);
  if (!v) {
    v = ajv.compile({ $ref: `${SPEC_ID}${pointer}` });
    validators.set(pointer, v);
  }
  return v;
}

function headerValue(headers: SpecResponse["headers"], name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(", ") : String(v);
}

/**
 * Asserts that `response` is what the spec documents for `method path` at its status.
 * @param method HTTP method (any case)
 * @param url request path, with or without a query string
 * @param response the response to check
 * @returns the parsed JSON body (or the text body for non-JSON media types)
 */
export function expectMatchesSpec(method: string, url: string, response: SpecResponse): unknown {
  const path = url.split("?")[0]!;
  const item = spec.paths[path];
  const op = item?.[method.toLowerCase()] as { responses: Json } | undefined;
  let documented: { value: Json; pointer: string };
  let statusKey: string;
  if (!op) {
    // Not in the contract: must be the documented 404.
    expect(response.statusCode, `${method} ${path} is not in the spec, so it must answer 404`).toBe(404);
    statusKey = "404";
    documented = deref({ $ref: "#/components/responses/DockerNotFound" }, "");
  } else {
    const status = String(response.statusCode);
    const candidates = [status, `${status[0]}XX`, "default"];
    const found = candidates.find((k) => op.responses[k] !== undefined);
    expect(
      found,
      `${method} ${path} answered ${status}, which the spec does not document (body: ${response.body.slice(0, 300)})`,
    ).toBeDefined();
    statusKey = found!;
    documented = deref(
      op.responses[statusKey] as Json,
      `#/paths/${pointerSegment(path)}/${method.toLowerCase()}/responses/${statusKey}`,
    );
  }
  specCoverage.add(`${method.toUpperCase()} ${op ? path : "(unlisted)"} ${statusKey}`);

  const headers = (documented.value.headers ?? {}) as Record<string, Json>;
  for (const [name, h] of Object.entries(headers)) {
    const header = deref(h, `${documented.pointer}/headers/${pointerSegment(name)}`);
    const value = headerValue(response.headers, name);
    if (header.value.required === true) {
      expect(value, `${method} ${path} ${statusKey}: header ${name} is required`).toBeDefined();
    }
    if (value !== undefined && header.value.schema !== undefined) {
      const validate = validatorFor(`${header.pointer}/schema`);
      expect(validate(value), `header ${name}: ${ajv.errorsText(validate.errors)}`).toBe(true);
    }
  }

  const content = documented.value.content as Record<string, Json> | undefined;
  if (!content) {
    expect(response.body, `${method} ${path} ${statusKey} documents no body`).toBe("");
    return undefined;
  }
  const contentType = headerValue(response.headers, "content-type") ?? "";
  const mediaType = contentType.split(";")[0]!.trim().toLowerCase();
  expect(
    Object.keys(content),
    `${method} ${path} ${statusKey}: Content-Type "${contentType}" is not documented`,
  ).toContain(mediaType);
  const schemaPointer = `${documented.pointer}/content/${pointerSegment(mediaType)}/schema`;
  const validate = validatorFor(schemaPointer);
  let body: unknown = response.body;
  if (mediaType === "application/json" || mediaType.endsWith("+json")) {
    expect(() => JSON.parse(response.body), `${method} ${path}: body is not JSON`).not.toThrow();
    body = JSON.parse(response.body);
  }
  const ok = validate(body);
  expect(
    ok,
    `${method} ${path} ${statusKey} body does not match ${schemaPointer}: ${ajv.errorsText(validate.errors)}\nbody: ${response.body.slice(0, 500)}`,
  ).toBe(true);
  return body;
}
