/** `policy.rules[]`: who gets which registry actions (distribution docs/spec/auth/scope.md). */
import { z } from "zod";
import { nonEmpty } from "./common.js";

/** Registry actions (distribution docs/spec/auth/scope.md). `*` means every action. */
export const ACTIONS = ["pull", "push", "delete", "*"] as const;

/** One registry action. */
export type Action = (typeof ACTIONS)[number];
const globSchema = z.string().min(1).max(512);

const grantSchema = z
  .object({
    repository: globSchema.optional(),
    registry: z.literal("catalog").optional(),
    actions: z.array(z.enum(ACTIONS)).min(1, "must list at least one action"),
  })
  .strict()
  .refine((g) => (g.repository === undefined) !== (g.registry === undefined), {
    message: "set exactly one of repository, registry",
  });

/** A Kubernetes annotation key (qualified name): `[dns-subdomain/]name`, name <= 63 characters. */
const ANNOTATION_KEY =
  /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/** `match.annotations`: annotation key -> glob on its value; at least one key. */
const annotationMatchSchema = z.record(z.string(), globSchema).superRefine((o, ctx) => {
  const keys = Object.keys(o);
  if (keys.length === 0) {
    ctx.addIssue({ code: "custom", message: "must list at least one annotation (or leave annotations out)" });
  }
  for (const k of keys) {
    if (k.length > 317 || !ANNOTATION_KEY.test(k)) {
      ctx.addIssue({
        code: "custom",
        message: `"${k.slice(0, 80)}" is not a Kubernetes annotation key ([prefix/]name)`,
      });
    }
  }
});

/** One policy rule: what it matches (cluster, namespace, service account, service, annotations) and its grants. */
export const ruleSchema = z
  .object({
    name: nonEmpty,
    match: z
      .object({
        cluster: globSchema.default("*"),
        namespace: globSchema.default("*"),
        serviceAccount: globSchema.default("*"),
        service: globSchema.default("*"),
        /** Service-account annotations (credential-provider path only): key -> glob on the value. */
        annotations: annotationMatchSchema.optional(),
      })
      .strict()
      .prefault({}),
    allow: z.array(grantSchema).default([]),
    deny: z.array(grantSchema).default([]),
  })
  .strict()
  .refine((r) => r.allow.length + r.deny.length > 0, {
    message: "a rule needs at least one allow or deny entry",
  });
