# fssnap: one Makefile for the library, the daemon, the CLI and the tests.
#   make            build everything into build/
#   make check      build and run the whole test suite (tests/run)
#   make asan|tsan  unit and concurrency tests under a sanitizer
#   make install DESTDIR=... PREFIX=/usr/local
#   make bench      the benchmarks in bench/
#   make fuzz       the libFuzzer targets, for FUZZ_SECONDS each

PREFIX    ?= /usr/local
BUILD     ?= build
CC        ?= cc
OPTFLAGS  ?= -O2
SANFLAGS  ?=
PKGS      := fuse3 ext2fs com_err blkid json-c libsystemd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS    ?= -g $(OPTFLAGS)
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
             -Wall -Wextra -Werror -pthread -Iinclude -I. \
             $(PKG_CFLAGS) $(SANFLAGS) $(CFLAGS)
LDLIBS    := -pthread

# The engine and the helpers it is built from.
LIB_SRC    := $(wildcard engine/*.c common/*.c)
# The frontends, the file system half and the daemon's own code.
DAEMON_SRC := $(wildcard fs/*.c nbd/*.c fuse/*.c control/*.c daemon/*.c)
# The CLI speaks only the control protocol: no engine in it.
CLI_SRC    := $(wildcard cli/*.c) control/proto.c control/options.c \
              common/size.c fs/freeze.c fs/loop.c
UNIT_SRC   := $(wildcard tests/unit/test-*.c tests/engine/test-*.c)
BENCH_SRC  := $(wildcard bench/*.c)

LIB        := $(BUILD)/libfssnap.a
DAEMON     := $(if $(wildcard daemon/main.c),$(BUILD)/fssnapd)
CLI        := $(if $(wildcard cli/main.c),$(BUILD)/fssnap)
UNIT_BINS  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

.PHONY: all check unit asan tsan install bench fuzz clean
all: $(LIB) $(DAEMON) $(CLI) $(UNIT_BINS) $(BENCH_BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(LIB): $(call obj,$(LIB_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/fssnapd: $(call obj,$(DAEMON_SRC)) $(LIB)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/fssnap: $(call obj,$(CLI_SRC))
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(shell pkg-config --libs json-c blkid) $(LDLIBS)

# Engine tests link the engine alone; unit tests may use any object of the
# daemon except its main().
TEST_OBJS = $(call obj,$(filter-out daemon/main.c,$(DAEMON_SRC)))
$(BUILD)/tests/engine/%: tests/engine/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $^ -lcmocka $(LDLIBS)
$(BUILD)/tests/unit/%: tests/unit/%.c $(TEST_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

check: all
	tests/run

# Unit and concurrency tests only (what the sanitizer builds run).
unit: $(UNIT_BINS)
	BUILD=$(BUILD) tests/run --unit

asan:
	$(MAKE) BUILD=build-asan OPTFLAGS=-O1 \
	  SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" unit
tsan:
	$(MAKE) BUILD=build-tsan OPTFLAGS=-O1 SANFLAGS="-fsanitize=thread" unit

install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin \
	  $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include
	install -m 0644 $(LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 0644 include/libfssnap.h $(DESTDIR)$(PREFIX)/include/
	$(if $(DAEMON),install -m 0755 $(DAEMON) $(DESTDIR)$(PREFIX)/sbin/)
	$(if $(CLI),install -m 0755 $(CLI) $(DESTDIR)$(PREFIX)/bin/)

bench: $(BENCH_BINS)
	bench/run

FUZZ_SECONDS ?= 300
fuzz:
	fuzzing/run $(FUZZ_SECONDS)

clean:
	rm -rf build build-asan build-tsan build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
