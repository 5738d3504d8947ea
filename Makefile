# fssnap: one Makefile for the library, the daemon, the CLI and the tests.
#   make            build everything into build/
#   make check      build and run the whole test suite (tests/run)
#   make asan|tsan  unit and concurrency tests under a sanitizer
#   make install DESTDIR=... PREFIX=/usr/local   programs, man pages, units, docs
#   make install-lib DESTDIR=... PREFIX=...      libfssnap.a and its header
#   make bench      the benchmarks in bench/
#   make bench-guest  block paths in a qemu guest (bench/guest)
#   make fuzz       the libFuzzer targets, for FUZZ_SECONDS each

PREFIX    ?= /usr/local
BUILD     ?= build
CC        ?= cc
OPTFLAGS  ?= -O2
SANFLAGS  ?=
PKGS      := fuse3 ext2fs com_err blkid json-c libsystemd gnutls liburing
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS    ?= -g $(OPTFLAGS)
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
             -Wall -Wextra -Werror -pthread -Iinclude -I. \
             $(PKG_CFLAGS) $(SANFLAGS) $(CPPFLAGS) $(CFLAGS)
LDLIBS    := -pthread $(LDFLAGS)

# The engine and the helpers it is built from.
LIB_SRC    := $(wildcard engine/*.c common/*.c)
# The frontends, the file system half and the daemon's own code.
DAEMON_SRC := $(wildcard fs/*.c nbd/*.c fuse/*.c ublk/*.c control/*.c daemon/*.c)
# The CLI speaks only the control protocol: no engine in it.
CLI_SRC    := $(wildcard cli/*.c) control/proto.c control/options.c \
              common/size.c common/sysfs.c fs/freeze.c fs/loop.c
UNIT_SRC   := $(wildcard tests/unit/test-*.c tests/engine/test-*.c)
BENCH_SRC  := $(wildcard bench/*.c)

LIB        := $(BUILD)/libfssnap.a
LIB_INTERNAL := $(BUILD)/libfssnap-internal.a
DAEMON     := $(if $(wildcard daemon/main.c),$(BUILD)/fssnapd)
CLI        := $(if $(wildcard cli/main.c),$(BUILD)/fssnap)
UNIT_BINS  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

# Installed besides the programs: man pages (scdoc sources in man/), the
# systemd units (systemd/*.in, @SBINDIR@ filled in at install) and tmpfiles.
MAN_PAGES  := $(patsubst man/%.scd,$(BUILD)/man/%,$(wildcard man/*.scd))
UNITS      := $(wildcard systemd/*.service.in)
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/fssnap
SYSTEMDUNITDIR ?= $(or $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null),/lib/systemd/system)
TMPFILESDIR    ?= $(or $(shell pkg-config --variable=tmpfilesdir systemd 2>/dev/null),/usr/lib/tmpfiles.d)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

.PHONY: all programs check unit asan tsan install install-lib bench bench-guest fuzz clean
all: programs $(UNIT_BINS) $(BENCH_BINS)
# What make install installs (the Debian package builds only this).
programs: $(LIB) $(DAEMON) $(CLI) $(MAN_PAGES)

$(BUILD)/man/%: man/%.scd
	@mkdir -p $(dir $@)
	scdoc <$< >$@.tmp && mv $@.tmp $@

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

# The engine's objects are built with hidden visibility: only what
# include/libfssnap.h marks FSSNAP_API is exported.  libfssnap.a (installed)
# is one partially linked object whose hidden symbols are made local, so
# it exports the public API alone; libfssnap-internal.a holds the same
# objects as they are, for the daemon, the CLI and the tests, which also
# use the engine's helpers (sizes, logs, bitmaps, stores...).
$(call obj,$(LIB_SRC)): ALL_CFLAGS += -fvisibility=hidden

$(LIB_INTERNAL): $(call obj,$(LIB_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIB): $(call obj,$(LIB_SRC))
	@mkdir -p $(dir $@)
	$(LD) -r -o $(BUILD)/obj/libfssnap.o $^
	objcopy --localize-hidden $(BUILD)/obj/libfssnap.o
	rm -f $@ && ar rcs $@ $(BUILD)/obj/libfssnap.o

$(BUILD)/fssnapd: $(call obj,$(DAEMON_SRC)) $(LIB_INTERNAL)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/fssnap: $(call obj,$(CLI_SRC))
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(shell pkg-config --libs json-c blkid) $(LDLIBS)

# Engine tests link the engine alone (with its internals: they wrap its
# stores; test-faults also fails allocations on demand); unit tests may use
# any object of the daemon except its main().
TEST_OBJS = $(call obj,$(filter-out daemon/main.c,$(DAEMON_SRC)))
$(BUILD)/tests/engine/%: tests/engine/%.c $(LIB_INTERNAL)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $^ -lcmocka $(LDLIBS)
$(BUILD)/tests/engine/test-faults: LDLIBS += -Wl,--wrap=bitmap_init
$(BUILD)/tests/unit/%: tests/unit/%.c $(TEST_OBJS) $(LIB_INTERNAL)
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

install: programs
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 \
	  $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(TMPFILESDIR) \
	  $(DESTDIR)$(DOCDIR)/examples
	install -m 0755 $(DAEMON) $(CLI) $(DESTDIR)$(SBINDIR)/
	install -m 0644 $(MAN_PAGES) $(DESTDIR)$(MANDIR)/man8/
	$(foreach u,$(UNITS),sed 's|@SBINDIR@|$(SBINDIR)|g' $(u) \
	  >$(DESTDIR)$(SYSTEMDUNITDIR)/$(notdir $(u:.in=)) && \
	  chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$(notdir $(u:.in=)) &&) true
	install -m 0644 systemd/fssnap.tmpfiles $(DESTDIR)$(TMPFILESDIR)/fssnap.conf
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 examples/*.sh $(DESTDIR)$(DOCDIR)/examples/

# The engine as a static library for programs of one's own: not part of
# install (the Debian package ships the programs only).
install-lib: $(LIB)
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include
	install -m 0644 $(LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 0644 include/libfssnap.h $(DESTDIR)$(PREFIX)/include/

bench: $(BENCH_BINS)
	bench/run

bench-guest: all
	BUILD=$(BUILD) bench/guest

FUZZ_SECONDS ?= 300
fuzz:
	fuzzing/run $(FUZZ_SECONDS)

clean:
	rm -rf build build-asan build-tsan build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
