# syntax=docker/dockerfile:1
#
# registry-token-exchange: build with the full toolchain, run with production dependencies only.
#
#   docker build -t registry-token-exchange:0.1.0 .      (releasing and publishing: docs/operations.md)
#   docker run --read-only --tmpfs /tmp -p 8080:8080 \
#     -v /path/to/config:/etc/registry-token-exchange:ro registry-token-exchange:0.1.0
#
# The runtime image runs as uid/gid 1000 (the image's `node` user, numeric so Kubernetes can check
# runAsNonRoot), writes nothing outside /tmp and the local-mode state folder
# /var/lib/registry-token-exchange (a volume), and works with a read-only root file system.

ARG NODE_IMAGE=node:24-bookworm-slim

# --- build: compile TypeScript to dist/ -------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts are needed to compile (tsc only).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# --- deps: production dependencies only ---------------------------------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# --- runtime -----------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
# The release's version (package.json `version`; a test keeps them equal). docs/operations.md: releasing.
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="registry-token-exchange" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY openapi ./openapi
# Local mode's state folder (`serve --local --state-dir`): a fresh named volume mounted here inherits
# this ownership, so the non-root user can write its keys there and nowhere else.
RUN mkdir -p /var/lib/registry-token-exchange /etc/registry-token-exchange \
  && chown 1000:1000 /var/lib/registry-token-exchange
USER 1000:1000
EXPOSE 8080
# No curl in slim images: node's own fetch. Set HEALTHCHECK_URL when serving HTTPS or another port
# (with NODE_EXTRA_CA_CERTS for a private CA). Kubernetes ignores this and uses the probes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.HEALTHCHECK_URL || 'http://127.0.0.1:' + (process.env.PORT || 8080) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/bin.js"]
CMD ["serve", "--config", "/etc/registry-token-exchange/config.yaml"]
