# scsync — run `make` for the list of targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

MODULES := shared local-server cloud-server lockd bench
BIN     := $(CURDIR)/bin
# Environment for tests and the demo: where the dev stack listens.
STACK_ENV = eval "$$(bash scripts/stack.sh env)"

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

stack-up: ## start (installing if missing) PostgreSQL, Redis, RabbitMQ and MinIO on loopback
	@bash scripts/stack.sh up

stack-down: ## stop what stack-up started (shared services it found running are left alone)
	@bash scripts/stack.sh down

stack-status: ## show what runs where
	@bash scripts/stack.sh status

build: ## build sc-local, sc-cloud and lockd into ./bin
	@mkdir -p $(BIN)
	cd local-server && go build -o $(BIN)/sc-local ./cmd/sc-local
	cd cloud-server && go build -o $(BIN)/sc-cloud ./cmd/sc-cloud
	cd lockd && go build -o $(BIN)/lockd ./cmd/lockd
	@echo "built: $(BIN)/sc-local $(BIN)/sc-cloud $(BIN)/lockd"

build-windows: ## cross-compile sc-local for Windows (pure Go, CGO_ENABLED=0)
	@mkdir -p $(BIN)
	cd local-server && CGO_ENABLED=0 GOOS=windows GOARCH=amd64 go build -o $(BIN)/sc-local.exe ./cmd/sc-local
	@echo "built: $(BIN)/sc-local.exe"

test: stack-up ## run every module's tests with -race against the real services
	@$(STACK_ENV); export CI=$${CI:-}; failed=""; \
	for m in $(MODULES); do \
		echo "== $$m"; \
		timeout=10m; par=""; \
		if [ $$m = local-server ]; then timeout=15m; par="-parallel 4"; fi; \
		(cd $$m && go test -race -count=1 -timeout $$timeout $$par ./...) || failed="$$failed $$m"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED modules:$$failed"; exit 1; fi

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

CHAOS_DURATION ?= 2m
CHAOS_TIMEOUT  ?= 2h
chaos: stack-up ## soak: 3 clinics, 3 cloud nodes, random operations under injected faults (CHAOS_DURATION=2m, CHAOS_SEED to replay)
	@$(STACK_ENV); export CI=$${CI:-}; \
	cd local-server && CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_SEED=$${CHAOS_SEED:-} \
		go test -race -count=1 -v -run '^TestChaos$$' -timeout $(CHAOS_TIMEOUT) ./e2e/

BENCH_FLAGS ?=
bench: stack-up ## run every benchmark against the real stack (≈11 min): table on stdout, bench/results.json
	@$(STACK_ENV); cd bench && go build -o $(BIN)/bench-all ./cmd/all
	@$(STACK_ENV); $(BIN)/bench-all -json bench/results.json $(BENCH_FLAGS)

FUZZTIME ?= 20s
fuzz: ## short fuzz runs (FUZZTIME each) of the wire decoder, record decoding, versions and the API input parsers
	cd shared && go test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./wire/
	cd shared && go test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./records/
	cd shared && go test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./version/
	cd shared && go test -run '^$$' -fuzz FuzzImportLine -fuzztime $(FUZZTIME) ./httpapi/
	cd shared && go test -run '^$$' -fuzz FuzzDecodeSave -fuzztime $(FUZZTIME) ./httpapi/
	cd shared && go test -run '^$$' -fuzz FuzzParseList -fuzztime $(FUZZTIME) ./httpapi/

demo: stack-up ## run the whole appliance: lockd, two sc-cloud nodes, sc-local, demo data; Ctrl-C stops it
	@bash scripts/demo.sh

demo-check: stack-up ## the demo, non-interactive: show replication both ways, then stop
	@DEMO_EXIT=1 bash scripts/demo.sh

clean: ## remove build output
	rm -rf $(BIN)

.PHONY: help stack-up stack-down stack-status build build-windows test modules lint fuzz chaos bench demo demo-check clean
