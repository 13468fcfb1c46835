# scsync — run `make` for the list of targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

MODULES := shared local-server cloud-server lockd bench deployments/check
# Every go.mod names the patched toolchain (`toolchain go1.26.11`): let go
# fetch it through the module proxy where the installed one is older, even if
# the environment says GOTOOLCHAIN=local.
export GOTOOLCHAIN := auto
BIN     := $(CURDIR)/bin
# Environment for tests and the demo: where the dev stack listens.
STACK_ENV = eval "$$(bash scripts/stack.sh env)"

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

stack-up: ## start (installing if missing) PostgreSQL, Redis, RabbitMQ and MinIO on loopback
	@bash scripts/stack.sh up

stack-down: ## stop what stack-up started (shared services it found running are left alone)
	@bash scripts/stack.sh down

stack-status: ## show what runs where
	@bash scripts/stack.sh status

# The commit --version, /readyz and scsync_build_info name (Go's own VCS
# stamp is off where GOFLAGS=-buildvcs=false).
STAMP := -ldflags "-X github.com/scsync/scsync/shared/buildinfo.Commit=$(shell git rev-parse HEAD 2>/dev/null)"

build: ## build sc-local, sc-cloud and lockd into ./bin
	@mkdir -p $(BIN)
	cd local-server && go build $(STAMP) -o $(BIN)/sc-local ./cmd/sc-local
	cd cloud-server && go build $(STAMP) -o $(BIN)/sc-cloud ./cmd/sc-cloud
	cd lockd && go build $(STAMP) -o $(BIN)/lockd ./cmd/lockd
	@echo "built: $(BIN)/sc-local $(BIN)/sc-cloud $(BIN)/lockd"

build-windows: ## cross-compile sc-local for Windows (pure Go, CGO_ENABLED=0)
	@mkdir -p $(BIN)
	cd local-server && CGO_ENABLED=0 GOOS=windows GOARCH=amd64 go build -o $(BIN)/sc-local.exe ./cmd/sc-local
	@echo "built: $(BIN)/sc-local.exe"

package: ## build and check the .deb and the MSI of sc-local into dist/ (systemd-analyze of the units, dpkg -i in a throw-away overlay, msiinfo)
	@bash scripts/package.sh all

package-linux: ## build and check the Debian package of sc-local (dist/scsync-local_*.deb)
	@bash scripts/package.sh check-units
	@bash scripts/package.sh deb
	@bash scripts/package.sh check-deb

package-windows: ## build and check the MSI of sc-local on Linux with wixl (dist/scsync-local-*.msi)
	@bash scripts/package.sh msi
	@bash scripts/package.sh check-msi

# -race needs cgo and a C compiler; a machine without one (a fresh Debian
# with only Go, git and make) runs the same tests without the detector.
RACE ?= $(shell command -v gcc >/dev/null 2>&1 && echo -race)

test: stack-up ## run every module's tests (with -race where a C compiler is installed) against the real services; local-server beside the others (scripts/test.sh)
	@$(STACK_ENV); export CI=$${CI:-}; RACE="$(RACE)" bash scripts/test.sh $(MODULES)

# The viewer's Chromium tests (build tag browser, local-server/e2e/viewer*_test.go):
# apart from `make test` so a fresh Debian without chromium still passes it.
# As root, a missing chromium is installed with apt; otherwise, and if that
# fails, the target fails under CI=true (the tests refuse to skip there).
# VIEWER_SCREENSHOTS=docs/viewer also writes the pages' screenshots.
BROWSER_TIMEOUT ?= 15m
test-browser: stack-up ## the viewer tested in headless Chromium (chromedp; installs Debian's chromium when root), a few minutes
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "== installing chromium (apt-get)"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null || \
			{ apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null; } || true; \
		fi; \
	fi; \
	if ! command -v chromium >/dev/null 2>&1; then \
		echo "test-browser: chromium is not installed and could not be (apt-get install chromium as root)"; \
		if [ "$${CI:-}" = true ]; then exit 1; fi; \
	fi
	@$(STACK_ENV); export CI=$${CI:-}; \
	if [ -n "$(VIEWER_SCREENSHOTS)" ]; then mkdir -p "$(VIEWER_SCREENSHOTS)"; export VIEWER_SCREENSHOTS="$(abspath $(VIEWER_SCREENSHOTS))"; fi; \
	cd local-server && go test -tags browser -count=1 -timeout $(BROWSER_TIMEOUT) -parallel 1 -run '^TestViewer' ./e2e/

modules: ## each module builds and vets on its own (GOWORK=off), sc-local cross-compiles
	@for m in $(MODULES); do \
		echo "== $$m (GOWORK=off)"; \
		(cd $$m && GOWORK=off go build ./... && GOWORK=off go vet ./...); \
	done
	cd local-server && CGO_ENABLED=0 GOOS=windows GOARCH=amd64 go build -o /dev/null ./cmd/sc-local
	cd local-server && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -o /dev/null ./cmd/sc-local
	@echo "modules: ok"

lint: ## gofmt, go vet and golangci-lint (explicit linter list in .golangci.yml)
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt: not formatted:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && go vet ./...); done
	@lint=$$(bash scripts/tools.sh golangci-lint); \
	for m in $(MODULES); do echo "== golangci-lint $$m"; (cd $$m && $$lint run --config $(CURDIR)/.golangci.yml ./...); done

vulncheck: ## govulncheck every module against the offline Go vulnerability database (golang.org/x/vulndb, pinned in scripts/lib.sh)
	@gvc=$$(bash scripts/tools.sh govulncheck); db=$$(bash scripts/tools.sh vulndb); \
	for m in $(MODULES); do echo "== govulncheck $$m"; (cd $$m && GOWORK=off $$gvc -db "file://$$db" ./...); done

CHAOS_DURATION ?= 2m
CHAOS_TIMEOUT  ?= 2h
chaos: stack-up ## soak: 3 clinics, 3 cloud nodes, random operations under injected faults (CHAOS_DURATION=2m, CHAOS_SEED to replay)
	@$(STACK_ENV); export CI=$${CI:-}; \
	cd local-server && CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_SEED=$${CHAOS_SEED:-} \
		go test -race -count=1 -v -run '^TestChaos$$' -timeout $(CHAOS_TIMEOUT) ./e2e/

BENCH_FLAGS ?=
bench: stack-up ## run every benchmark against the real stack (≈17 min, scale at 1,000 clinics): table on stdout, bench/results.json
	@$(STACK_ENV); cd bench && go build -o $(BIN)/bench-all ./cmd/all
	@$(STACK_ENV); $(BIN)/bench-all -json bench/results.json $(BENCH_FLAGS)

SCALE_CLINICS ?= 1000
BENCH_CPU_LOAD ?= false
bench-latency: stack-up ## the latency benchmark alone (about 1 minute); BENCH_CPU_LOAD=true keeps one core busy with a second process meanwhile: bench/results-latency.json
	@$(STACK_ENV); cd bench && go build -o $(BIN)/bench-latency ./cmd/latency
	@$(STACK_ENV); $(BIN)/bench-latency -cpu-load=$(BENCH_CPU_LOAD) -json bench/results-latency.json $(BENCH_FLAGS)

bench-scale: stack-up ## the scale benchmark alone (SCALE_CLINICS, default 1000; ≈6 min), on a private RabbitMQ: bench/results-scale-N.json
	@$(STACK_ENV); cd bench && go build -o $(BIN)/bench-scale ./cmd/scale
	@$(STACK_ENV); $(BIN)/bench-scale -clinics $(SCALE_CLINICS) -json bench/results-scale-$(SCALE_CLINICS).json $(BENCH_FLAGS)

bench-scale-10k: ## the scale benchmark at 10,000 clinics, where issue 14's bars are defined (long: docs/performance.md)
	@$(MAKE) --no-print-directory bench-scale SCALE_CLINICS=10000

VERIFY_RECORDS ?= 1000000
bench-verify: stack-up ## the verify benchmark alone over VERIFY_RECORDS equal records (default 1,000,000, where issue 16's budget is set; ≈25 min, most of it the backfill): bench/results-verify-N.json
	@$(STACK_ENV); cd bench && go build -o $(BIN)/bench-verify ./cmd/verify
	@$(STACK_ENV); $(BIN)/bench-verify -records $(VERIFY_RECORDS) -json bench/results-verify-$(VERIFY_RECORDS).json $(BENCH_FLAGS)

# A count (Nx), not a duration: with a duration, Go's fuzz coordinator can fail a clean run with
# "context deadline exceeded" when the time runs out while a worker is mid-call on a busy machine
# (golang/go#75804, fixed only in go1.27). A count has no deadline to race.
FUZZTIME ?= 200000x
fuzz: ## short fuzz runs (FUZZTIME executions each) of the wire decoder and encoder, the other hand JSON encoders, record decoding, versions, the API input parsers and the cloud's statement arguments
	cd shared && go test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./wire/
	cd shared && go test -run '^$$' -fuzz '^FuzzDecodeFast$$' -fuzztime $(FUZZTIME) ./wire/
	cd shared && go test -run '^$$' -fuzz '^FuzzAppendJSON$$' -fuzztime $(FUZZTIME) ./wire/
	cd shared && go test -run '^$$' -fuzz '^FuzzValidJSON$$' -fuzztime $(FUZZTIME) ./wire/
	cd shared && go test -run '^$$' -fuzz '^FuzzAppenders$$' -fuzztime $(FUZZTIME) ./wire/
	cd shared && go test -run '^$$' -fuzz '^FuzzAppendJSON$$' -fuzztime $(FUZZTIME) ./events/
	cd local-server && go test -run '^$$' -fuzz '^FuzzAppendMeta$$' -fuzztime $(FUZZTIME) ./internal/store/
	cd shared && go test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./records/
	cd shared && go test -run '^$$' -fuzz '^FuzzDecodeFlat$$' -fuzztime $(FUZZTIME) ./records/
	cd shared && go test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./version/
	cd shared && go test -run '^$$' -fuzz FuzzImportLine -fuzztime $(FUZZTIME) ./httpapi/
	cd shared && go test -run '^$$' -fuzz '^FuzzDecodeSave$$' -fuzztime $(FUZZTIME) ./httpapi/
	cd shared && go test -run '^$$' -fuzz '^FuzzDecodeSaveOnce$$' -fuzztime $(FUZZTIME) ./httpapi/
	cd shared && go test -run '^$$' -fuzz FuzzParseList -fuzztime $(FUZZTIME) ./httpapi/
	cd cloud-server && go test -run '^$$' -fuzz '^FuzzEncodeParams$$' -fuzztime $(FUZZTIME) ./internal/store/

demo: stack-up ## run the whole appliance: lockd, two sc-cloud nodes, sc-local, demo data; Ctrl-C stops it
	@bash scripts/demo.sh

demo-check: stack-up ## the demo, non-interactive: show replication both ways, then stop
	@DEMO_EXIT=1 bash scripts/demo.sh

deploy-check: ## check deployments/: compose file, Helm chart, alert rules, dashboard, RabbitMQ definitions
	@bash scripts/deploy-check.sh

clean: ## remove build output
	rm -rf $(BIN) dist

.PHONY: help stack-up stack-down stack-status build build-windows package package-linux package-windows test test-browser modules lint vulncheck fuzz chaos bench bench-latency bench-scale bench-scale-10k bench-verify demo demo-check deploy-check clean
