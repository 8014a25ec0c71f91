# hsmkms images. Two targets:
#   prod (default): hsmkms alone, as an unprivileged user. Add your HSM's
#         PKCS#11 client library in an image built FROM this one, and mount
#         /etc/hsmkms (config, TLS files, PIN file) read-only.
#   dev:  prod plus SoftHSM2, serving `--dev` (public credentials test/test):
#         for trying it out, never for keys that matter.
# The version `hsmkms version` reports: --build-arg VERSION=$(git describe --tags --always --dirty)

# Build stage: cgo is needed for the PKCS#11 module loader.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The build context has no .git (.dockerignore), so the version comes from
# the build argument alone.
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -trimpath -buildvcs=false -ldflags "-X main.version=${VERSION}" -o /out/hsmkms ./cmd/hsmkms

FROM debian:bookworm-slim AS prod
# curl: the health check. ca-certificates: HSM clients that speak TLS.
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/hsmkms --shell /usr/sbin/nologin hsmkms \
    && install -d -m 0700 -o hsmkms -g hsmkms /var/lib/hsmkms \
    && install -d -m 0750 -o root -g hsmkms /etc/hsmkms
COPY --from=build /out/hsmkms /usr/local/bin/hsmkms
USER hsmkms
VOLUME /var/lib/hsmkms
# 8443: the KMS API over TLS (listen: in the config); 9464: metrics, when on.
EXPOSE 8443 9464
# /readyz: the token answers a real operation, the store and the audit log
# take writes. Over TLS the check trusts nothing: it asks the local server.
ENV HSMKMS_READYZ_URL=https://127.0.0.1:8443/readyz
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD curl -fsSk --max-time 4 "$HSMKMS_READYZ_URL" || exit 1
ENTRYPOINT ["/usr/local/bin/hsmkms"]
CMD ["serve", "--config", "/etc/hsmkms/hsmkms.yaml", "--data-dir", "/var/lib/hsmkms"]

FROM prod AS dev
USER root
RUN apt-get update && apt-get install -y --no-install-recommends softhsm2 \
    && rm -rf /var/lib/apt/lists/*
USER hsmkms
EXPOSE 8080
ENV HSMKMS_READYZ_URL=http://127.0.0.1:8080/readyz
# All addresses of the container's own network: the port must be published
# on the host's loopback only (docker-compose.yml does).
CMD ["serve", "--dev", "--dev-container", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/hsmkms"]

FROM prod
