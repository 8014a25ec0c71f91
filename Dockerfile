# Build stage: cgo is needed for the PKCS#11 module loader.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# What `hsmkms version` prints; the build context has no git history
# (.dockerignore), so the caller passes it:
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) .
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -trimpath -buildvcs=false -ldflags "-X main.version=${VERSION}" -o /out/hsmkms ./cmd/hsmkms

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends softhsm2 curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/hsmkms /usr/local/bin/hsmkms
VOLUME /var/lib/hsmkms
ENTRYPOINT ["/usr/local/bin/hsmkms"]
