# Herald: the commands in the README. Each installs what is missing first.
JOBS ?= $(shell nproc)
BUILD ?= build
PORT ?= 7400

.PHONY: all deps build run test bench fuzz soak clean

all: build

deps:
	@scripts/deps.sh core

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

run: build
	exec $(BUILD)/broker/herald --port $(PORT)

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
