# hsmkms — build, run, test and benchmark.
#
#   make build   bin/hsmkms (hsmkms version prints $(VERSION): git describe,
#                or VERSION=... given to make) and bin/hsmkms-bench
#   make run     start hsmkms on 127.0.0.1:8080 with a SoftHSM2 dev token and
#                a bbolt store under ./.hsmkms/ (created if needed)
#   make test    the whole test suite (needs SoftHSM2; installed if missing)
#   make bench   throughput and CPU figures against the raw token operation,
#                and ratios measured in the same run (policy, audit and
#                metrics overheads; grants: CreateGrant at 10,000 grants ÷ the first,
#                an unrelated write while grants are created ÷ quiet)

GO       ?= go
BIN      ?= bin
LISTEN   ?= 127.0.0.1:8080
DATA_DIR ?= .hsmkms
# Extra flags for go test, e.g. make test TESTFLAGS=-v
TESTFLAGS ?=
BENCHFLAGS ?= -duration 5s
# What `hsmkms version` prints: the nearest tag, commits since and commit
# (git describe), or "dev" where there is no git checkout.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all build run test bench fuzz vet fmt softhsm2 awscli clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/hsmkms ./cmd/hsmkms
	$(GO) build -o $(BIN)/hsmkms-bench ./cmd/hsmkms-bench

# SoftHSM2 is the development token. Installed with apt when missing (as root,
# or through sudo when there is one).
softhsm2:
	@if ! command -v softhsm2-util >/dev/null 2>&1 || [ ! -e /usr/lib/softhsm/libsofthsm2.so ]; then \
		echo "installing softhsm2 with apt-get"; \
		SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2; \
	fi

# The AWS CLI: the end-to-end tests drive it over HTTPS, as users will.
awscli:
	@if ! command -v aws >/dev/null 2>&1; then \
		echo "installing awscli with apt-get"; \
		SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq awscli; \
	fi

run: softhsm2 build
	$(BIN)/hsmkms serve --dev --listen $(LISTEN) --data-dir $(DATA_DIR)

vet:
	$(GO) vet ./...

fmt:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test: softhsm2 awscli fmt vet
	$(GO) test -race -count=1 $(TESTFLAGS) ./...

bench: softhsm2
	$(GO) test -run '^$$' -bench . -benchtime 2s ./hsm ./service ./blob ./service/api/sigv4
	$(GO) test -run '^$$' -bench . -benchtime 2s ./test ./audit
	$(GO) run ./cmd/hsmkms-bench $(BENCHFLAGS)

# A short fuzzing run of the blob parser (the corpus also runs in make test).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 60s ./blob

clean:
	rm -rf $(BIN)
