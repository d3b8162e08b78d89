import { defineConfig } from "vitest/config";

// Convex function tests (convex-test). Python tests live under tests/ too but run with pytest.
export default defineConfig({
  test: {
    include: ["tests/convex/**/*.test.ts"],
    environment: "edge-runtime",
    server: { deps: { inline: ["convex-test"] } },
    testTimeout: 60_000,
  },
});
