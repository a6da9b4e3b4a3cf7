import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: "forks",
    // The JSON report lets .ci/run print a one-line "N passed, N failed" summary per Node version.
    reporters: ["default", "json"],
    outputFile: { json: "test-results/vitest.json" },
  },
});
