# make test  — install what the tests need, then go vet and the whole suite under -race.
# make demo  — pgleap demo: a whole upgrade, check to cutover, between a local PostgreSQL 13 and 17
#              that it starts itself, with PgBouncer and an application writing (DEMO_FLAGS=--keep).
# make bench — the benchmarks under bench/, against the tools people use today.
# make chaos — the long fault-injection run (CHAOS_FAULTS=200): faults, recoveries, differences.
#
# PGLEAP_TEST_SOURCE / PGLEAP_TEST_TARGET choose the pair of majors the suite runs against.

SOURCE_MAJOR := $(or $(PGLEAP_TEST_SOURCE),13)
TARGET_MAJOR := $(or $(PGLEAP_TEST_TARGET),17)
export PGLEAP_TEST_SOURCE := $(SOURCE_MAJOR)
export PGLEAP_TEST_TARGET := $(TARGET_MAJOR)

VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO_LDFLAGS := -X main.version=$(VERSION)
TEST_TIMEOUT ?= 20m

.PHONY: build deps test chaos demo demo-stop bench clean

build:
	go build -ldflags '$(GO_LDFLAGS)' -o bin/pgleap ./cmd/pgleap

# 15 is the old server of the cutover and rollback run without a superuser: before 15, only
# a superuser may set session_replication_role, which the way back's apply needs.
deps:
	scripts/install-postgres.sh --browser $(sort $(SOURCE_MAJOR) $(TARGET_MAJOR) 15)
	go mod download

# Files tests leave for people to look at (the status page's screenshot) land in test-output/.
test: deps
	go vet ./...
	mkdir -p test-output
	go test -race -timeout $(TEST_TIMEOUT) -artifacts -outputdir $(CURDIR)/test-output ./...

# The long fault-injection run (make test runs a short one): CHAOS_FAULTS faults, then a report.
CHAOS_FAULTS ?= 200
chaos: deps
	mkdir -p test-output
	PGLEAP_CHAOS_FAULTS=$(CHAOS_FAULTS) go test -count=1 -timeout 120m -run TestChaos -v -artifacts -outputdir $(CURDIR)/test-output ./internal/chaos

# pgleap demo installs PostgreSQL 13 and 17 with scripts/install-postgres.sh itself.
demo: build
	bin/pgleap demo $(DEMO_FLAGS)

demo-stop:
	test ! -x bin/pgleap || bin/pgleap demo --clean

bench: build deps
	scripts/bench.sh

clean: demo-stop
	rm -rf bin .demo test-output
