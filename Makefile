# Herald: the commands in the README. Each installs what is missing first.
JOBS ?= $(shell nproc)
BUILD ?= build
PORT ?= 7400
ARGS ?=

.PHONY: all deps configure build run test bench fuzz soak clean

all: build

deps:
	@scripts/deps.sh core

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null

build: configure
	@cmake --build $(BUILD) -j$(JOBS)

# Builds only the broker, showing compiler messages but not progress.
run: configure
	@echo "building $(BUILD)/broker/herald"
	@cmake --build $(BUILD) --target herald -j$(JOBS) >/dev/null
	@exec $(BUILD)/broker/herald --port $(PORT) $(ARGS)

test:
	@scripts/deps.sh browser
	@scripts/test.sh

bench:
	@scripts/deps.sh bench
	@scripts/bench.sh

fuzz:
	@scripts/deps.sh test
	@scripts/fuzz.sh $(FUZZ_SECONDS)

soak:
	@scripts/deps.sh test
	@scripts/soak.sh

clean:
	rm -rf build build-*
