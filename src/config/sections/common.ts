/** Value schemas several configuration sections share. */
import { z } from "zod";

/** A string with something besides white space (trimmed). */
export const nonEmpty = z.string().trim().min(1, "must not be empty");
/** An absolute `http:` or `https:` URL. */
export const httpUrl = z
  .string()
  .url("must be an absolute URL")
  .refine((u) => /^https?:\/\//.test(u), "must be an http(s) URL");
