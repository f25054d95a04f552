# ttsd: the two commands a fresh Debian/Ubuntu machine needs are `make run` and `make test`.
CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080
ADMIN_LISTEN ?= 127.0.0.1:8081

.PHONY: run test deps test-deps assets build release lint bench clean deploy-check browser-test screenshots deny fuzz

## Install what is missing, fetch the Piper voice and ONNX Runtime, build release, serve on 127.0.0.1:8080.
run: deps assets release
	./target/release/ttsd serve --listen $(LISTEN) --admin-listen $(ADMIN_LISTEN)

## Install what is missing, then lint and run every test (unit, end-to-end, example client).
test: test-deps assets
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) test --workspace --locked
	./scripts/check-example-client.sh
	./scripts/deploy-check.sh
	$(MAKE) browser-test

## Validate deploy/ offline (compose, Kubernetes, Grafana, Dockerfile, rules) and run prometheus.yml live.
deploy-check: test-deps
	./scripts/deploy-check.sh

## The live dashboard in Debian's Chromium (playwright-core) against a real `ttsd serve` under load.
browser-test: test-deps
	$(CARGO) build --locked -p ttsd
	node tests/browser/dashboard.mjs --binary target/debug/ttsd

## One PNG per dashboard tab in docs/img/, taken by the browser test against the release build.
screenshots: test-deps assets release
	node tests/browser/dashboard.mjs --binary target/release/ttsd --screenshots docs/img

## Dependency policy (deny.toml): licences, duplicate versions, sources; installs cargo-deny once.
deny:
	./scripts/deny.sh

## Every fuzz target for FUZZ_SECONDS each (default 600), two at a time (docs/robustness.md).
FUZZ_SECONDS ?= 600
fuzz:
	JOBS=2 ./scripts/fuzz.sh $(FUZZ_SECONDS)

deps:
	./scripts/install-deps.sh run

test-deps:
	./scripts/install-deps.sh test

assets:
	./scripts/fetch-assets.sh

build:
	$(CARGO) build --workspace --locked

release:
	$(CARGO) build --release --locked -p ttsd

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## End-to-end load test from the client's side; results in bench-results/.
bench: deps assets release
	mkdir -p bench-results
	./target/release/ttsd bench --voice en_US-joe-medium --sessions 1,4,16 --json bench-results/piper.json
	./target/release/ttsd bench --voice espeak-en-us --sessions 1,4,16,64 --json bench-results/espeak.json

clean:
	$(CARGO) clean
