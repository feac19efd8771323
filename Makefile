# SPDX-License-Identifier: MIT
# Spindle: build the kernel, the GRUB ISO, and boot it in QEMU.  `make help` lists the targets.

.DEFAULT_GOAL := all
.DELETE_ON_ERROR:
SHELL := /bin/bash

# ---- user-settable variables (see `make help`)
SMP         ?= 8
DBG         ?= 1
TESTS       ?=
REPEAT      ?= 1
SEED        ?= 1
VERBOSE     ?= 0
TIMEOUT     ?= 900
ACCEL       ?= tcg
FIRMWARE    ?= bios
MEM         ?= 256
EXTRA_TESTS ?=
CMDLINE     ?=
LOG         ?= build/serial.log
CC          ?= gcc
NOTESTS     ?= 0

ifeq ($(origin CC),default)
CC := gcc
endif
GDB_PORT    ?= 1234
DURATION    ?= 60
INJECT      ?= 0
BENCH_BOOTS ?= 1

# ---- every variable is checked before anything builds: a bad value is a one-line error.
# uint(x): x when it is one word of decimal digits, else empty (no shell involved).
uint = $(if $(filter 1,$(words $(1))),$(if $(subst 0,,$(subst 1,,$(subst 2,,$(subst 3,,$(subst \
    4,,$(subst 5,,$(subst 6,,$(subst 7,,$(subst 8,,$(subst 9,,$(1))))))))))),,$(1)))
# in_range(NAME,LO,HI): an error unless $(NAME) is a whole number from LO to HI.
in_range = $(if $(and $(call uint,$($(1))),$(shell [ $($(1)) -ge $(2) ] 2>/dev/null && \
    [ $($(1)) -le $(3) ] 2>/dev/null && echo y)),,$(error \
    $(1) must be a whole number from $(2) to $(3), not '$($(1))'))
# one_of(NAME,WORDS): an error unless $(NAME) is one of WORDS.
one_of = $(if $(and $(filter 1,$(words $($(1)))),$(filter $(WORDS_$(1)),$($(1)))),,$(error \
    $(1) must be one of $(WORDS_$(1)), not '$($(1))'))
WORDS_DBG      := 0 1
WORDS_VERBOSE  := 0 1
WORDS_ACCEL    := tcg kvm
WORDS_FIRMWARE := bios uefi efi
WORDS_NOTESTS  := 0 1
$(call one_of,DBG)
$(call one_of,NOTESTS)
$(call one_of,VERBOSE)
$(call one_of,ACCEL)
$(call one_of,FIRMWARE)
$(call in_range,SMP,1,16)
$(call in_range,REPEAT,1,100000)
$(call in_range,MEM,64,16384)
$(call in_range,TIMEOUT,0,604800)
$(call in_range,GDB_PORT,1024,65535)
$(call in_range,DURATION,5,3000)
$(call in_range,INJECT,0,1)
# make bench's contended window (the kernel clamps bench_ms to 10..5000); empty = its default.
ifneq ($(BENCH_MS),)
$(call in_range,BENCH_MS,10,5000)
endif
$(call in_range,BENCH_BOOTS,1,9)
$(foreach v,BENCH_OUT PEER_KIT,$(if $(filter-out 0 1,$(words $($(v)))),$(error \
    $(v) must be one path without spaces, not '$($(v))')))
# SEED: any 64-bit value the kernel reads (lib's parse_u64); 19 digits always fit.
$(if $(and $(call uint,$(SEED)),$(filter-out 11111111111111111111%,$(subst \
    0,1,$(subst 2,1,$(subst 3,1,$(subst 4,1,$(subst 5,1,$(subst 6,1,$(subst 7,1,$(subst \
    8,1,$(subst 9,1,$(SEED)))))))))))),,$(error SEED must be a whole number from 0 to \
    9999999999999999999, not '$(SEED)'))
# TESTS: comma-separated globs over Suite:case names (* and ? only, lib/glob.c).
comma := ,
strip_chars = $(if $(2),$(call strip_chars,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,999,$(2))),$(1))
TESTS_CHARS := a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F G H I J K L M N O P \
    Q R S T U V W X Y Z 0 1 2 3 4 5 6 7 8 9 * ? : _ - $(comma)
ifneq ($(words $(TESTS))$(strip $(call strip_chars,$(TESTS),$(TESTS_CHARS))),$(words $(TESTS)))
$(error TESTS must be comma-separated globs over Suite:case names (letters, digits, _ - : * ?), not '$(TESTS)')
endif
ifneq ($(filter-out 0 1,$(words $(TESTS))),)
$(error TESTS must be comma-separated globs over Suite:case names (letters, digits, _ - : * ?), not '$(TESTS)')
endif
# CMDLINE reaches grub.cfg through sed and a shell: no quotes, |, &, \, $$ or ;, and not the keys
# that have their own variable.
ifneq ($(strip $(foreach c,' " | & \ $$ ; `,$(findstring $(c),$(CMDLINE)))),)
$(error CMDLINE must not contain quotes, |, &, \, $$, ; or backquotes: '$(CMDLINE)')
endif
ifneq ($(filter tests=% seed=% repeat=% verbose=% smp=%,$(CMDLINE)),)
$(error CMDLINE must not set $(firstword $(filter tests=% seed=% repeat=% verbose=% smp=%,$(CMDLINE))): \
    use TESTS, SEED, REPEAT, VERBOSE or SMP)
endif
ifneq ($(words $(LOG)),1)
$(error LOG must be one path without spaces, not '$(LOG)')
endif

FLAVOUR := $(if $(filter 1,$(DBG)),checked,free)$(if $(filter clang%,$(notdir $(CC))),-clang,)
# NOTESTS=1: the kernel without tests/ (no workload), in build/<flavour>-notests.
ifeq ($(NOTESTS),1)
FLAVOUR := $(FLAVOUR)-notests
EXTRA_TESTS :=
endif
B       := build/$(FLAVOUR)
ifneq ($(words $(B)),1)
$(error B must be one folder path without spaces, not '$(B)')
endif
ifneq ($(filter / . .. ./ ../ ~ ~/,$(B)),)
$(error B must be a build folder such as build/mine, not '$(B)')
endif
NASM    ?= nasm
NM      ?= nm
OBJCOPY ?= objcopy

# ---- compiler flags (STYLE.md §9)
# Freestanding C: no libc, no hosted headers, no implicit PIC/stack protector.
CFLAGS_BASE := -std=gnu11 -ffreestanding -nostdinc -isystem $(shell $(CC) -print-file-name=include) \
    -fno-pic -fno-pie -fno-common -fno-stack-protector -fno-builtin-printf
# Frame pointers give every backtrace; no unwind tables needed. No shrink-wrapping: a
# function interrupted on a path without its frame would drop its caller from a report.
CFLAGS_BASE += -fno-omit-frame-pointer -fno-asynchronous-unwind-tables
# CONTAINING_RECORD and list casts are everywhere.
CFLAGS_BASE += -fno-strict-aliasing
# Kernel code: interrupts would overwrite a red zone; the image lives in the top 2 GiB;
# no SSE state is ever saved, so none may be used.
CFLAGS_BASE += -mno-red-zone -mcmodel=kernel -mgeneral-regs-only -mcx16
# NT's WCHAR is 16 bits.
CFLAGS_BASE += -fshort-wchar
ifneq ($(filter clang%,$(notdir $(CC))),)
CFLAGS_BASE += --target=x86_64-unknown-none-elf -mllvm -enable-shrink-wrap=false
else
CFLAGS_BASE += -fno-shrink-wrap
endif
WARNINGS := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
    -Wmissing-declarations -Wundef -Wpointer-arith -Wwrite-strings -Wvla -Wimplicit-fallthrough \
    -Wnull-dereference -Wformat=2 -Wdouble-promotion -Wno-unused-parameter \
    -Wno-multichar  # DDK pool tags are multi-character constants ('looP')
OPT      := -O2 -g
CPPFLAGS := -DDBG=$(DBG) -I. -Iinclude -Itests
CFLAGS   := $(CFLAGS_BASE) $(WARNINGS) $(OPT) $(CPPFLAGS) -MMD -MP
# clang writes each object's compile command next to it (-MJ): scripts/clang-tidy.sh joins
# the fragments into the compilation database of `make clang-tidy`.
MJ = $(if $(filter clang%,$(notdir $(CC))),-MJ $@.json)
NASMFLAGS := -f elf64 -w+all -Werror -g -F dwarf
LD       ?= ld
LDFLAGS  := -nostdlib -static -z max-page-size=4096 -z noexecstack -T linker.ld

# ---- sources: every file in the layer folders is built; nothing to register
C_SRCS   := $(sort $(wildcard arch/x86_64/*.c hal/*.c kernel/*.c kernel/*/*.c lib/*.c \
              $(if $(filter 1,$(NOTESTS)),,tests/harness/*.c tests/*.c tests/drivers/*.c \
              tests/bench/*.c tests/torture/*.c tests/faults/*.c)))
ASM_SRCS := $(sort $(wildcard boot/*.asm arch/x86_64/*.asm))
OBJS     := $(C_SRCS:%.c=$(B)/obj/%.o) $(ASM_SRCS:%.asm=$(B)/obj/%.asm.o)
# EXTRA_TESTS: files and globs, each file compiled on its own into $(B)/extra/ (named after its
# absolute path). The set is not part of the configuration stamp: changing it relinks the
# kernel and compiles only new extra files; they are compiled first, so their errors come first.
EXTRA_FILES := $(sort $(foreach g,$(EXTRA_TESTS),$(or $(wildcard $(g)),$(error \
    EXTRA_TESTS: '$(g)' matches no file))))
ifneq ($(filter-out %.c,$(EXTRA_FILES)),)
$(error EXTRA_TESTS must name C files (.c), not '$(firstword $(filter-out %.c,$(EXTRA_FILES)))')
endif
extra_obj = $(B)/extra/$(subst /,_,$(basename $(abspath $(1)))).o
EXTRA_OBJS := $(foreach f,$(EXTRA_FILES),$(call extra_obj,$(f)))

KERNEL   := $(B)/kernel.elf
ISO      := $(B)/spindle.iso
ISODIR   := $(B)/isodir

KCMDLINE := tests=$(TESTS) seed=$(SEED) repeat=$(REPEAT) verbose=$(VERBOSE) smp=$(SMP) $(CMDLINE)

# A stamp that changes whenever the configuration that shapes the image changes.
CONFIG_STAMP := $(B)/config.stamp
CONFIG_TEXT  := CC=$(CC) DBG=$(DBG)
$(shell mkdir -p $(B) && { [ -f $(CONFIG_STAMP) ] && [ "$$(cat $(CONFIG_STAMP))" = "$(CONFIG_TEXT)" ] || echo "$(CONFIG_TEXT)" > $(CONFIG_STAMP); })
CMDLINE_STAMP := $(B)/cmdline.stamp
EXTRA_STAMP := $(B)/extra.stamp
$(shell mkdir -p $(B) && { [ -f $(EXTRA_STAMP) ] && [ "$$(cat $(EXTRA_STAMP))" = "$(EXTRA_OBJS)" ] || echo "$(EXTRA_OBJS)" > $(EXTRA_STAMP); })
$(shell mkdir -p $(B) && { [ -f $(CMDLINE_STAMP) ] && [ "$$(cat $(CMDLINE_STAMP))" = "$(KCMDLINE)" ] || echo "$(KCMDLINE)" > $(CMDLINE_STAMP); })

.PHONY: all kernel iso run test debug gdb clean help deps check-layering check-headers check-format

# gdb's auto-load script beside the kernel (scripts/gdb/kernel-gdb.py.in).
GDB_AUTOLOAD := $(KERNEL)-gdb.py

all: $(KERNEL) $(ISO) $(GDB_AUTOLOAD)
kernel: $(KERNEL) $(GDB_AUTOLOAD)
iso: $(ISO)

$(B)/obj/%.o: %.c $(CONFIG_STAMP)
	@mkdir -p $(@D)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS) $(MJ) -c $< -o $@

$(B)/obj/%.asm.o: %.asm $(CONFIG_STAMP)
	@mkdir -p $(@D)
	@echo "  NASM    $<"
	@$(NASM) $(NASMFLAGS) -MD $(@:.o=.d) -MP -Iboot/ -Iarch/x86_64/ $< -o $@

define EXTRA_RULE
$(call extra_obj,$(1)): $(1) $(CONFIG_STAMP)
	@mkdir -p $$(@D)
	@echo "  CC      $(1)"
	@$$(CC) $$(CFLAGS) -c $(1) -o $$@
endef
$(foreach f,$(EXTRA_FILES),$(eval $(call EXTRA_RULE,$(f))))
.PHONY: extra-tests
extra-tests: $(EXTRA_OBJS)

# Two links: the first gives the function addresses, from which the symbol table for
# backtraces is generated; the table sits after all code, so the second link moves no
# function (checked below).
$(KERNEL): $(EXTRA_OBJS) $(OBJS) linker.ld scripts/gen-ksyms.sh $(CONFIG_STAMP) $(EXTRA_STAMP)
	@echo "  LD      $@"
	@$(LD) $(LDFLAGS) -o $(B)/kernel.pass1.elf $(OBJS) $(EXTRA_OBJS)
	@bash scripts/gen-ksyms.sh $(NM) $(B)/kernel.pass1.elf > $(B)/ksyms.c
	@$(CC) $(CFLAGS) -c $(B)/ksyms.c -o $(B)/ksyms.o
	@$(LD) $(LDFLAGS) -o $@ $(OBJS) $(EXTRA_OBJS) $(B)/ksyms.o
	@cmp -s <($(NM) -n $(B)/kernel.pass1.elf | grep -i ' t ' | grep -v ' __') <($(NM) -n $@ | grep -i ' t ' | grep -v ' __') \
	    || { echo "error: the symbol table moved code; fix linker.ld" >&2; mv $@ $@.bad; exit 1; }
	@if command -v grub-file >/dev/null; then grub-file --is-x86-multiboot2 $@ \
	    || { echo "error: $@ is not a multiboot2 image" >&2; rm -f $@; exit 1; }; fi

$(GDB_AUTOLOAD): scripts/gdb/kernel-gdb.py.in
	@mkdir -p $(@D)
	@sed 's|@ROOT@|$(CURDIR)|g' $< > $@

$(ISO): $(KERNEL) boot/grub.cfg $(CMDLINE_STAMP) | $(GDB_AUTOLOAD)
	@echo "  ISO     $@"
	@rm -rf $(ISODIR) && mkdir -p $(ISODIR)/boot/grub
	@$(OBJCOPY) --strip-debug $(KERNEL) $(ISODIR)/boot/kernel.elf
	@sed 's|@CMDLINE@|$(KCMDLINE)|' boot/grub.cfg > $(ISODIR)/boot/grub/grub.cfg
	@grub-mkrescue -o $@ $(ISODIR) >$(B)/grub-mkrescue.log 2>&1 \
	    || { cat $(B)/grub-mkrescue.log >&2; exit 1; }

-include $(OBJS:.o=.d) $(EXTRA_OBJS:.o=.d)

# ---- UEFI: GNU-EFI loader and ESP
# FIRMWARE=efi boots boot/efi/loader.c, a UEFI application built with Debian's gnu-efi, from
# an EFI system partition kept as a directory (QEMU shows it as a FAT disk, scripts/run-qemu.sh):
#   $(ESPDIR)/EFI/BOOT/BOOTX64.EFI   the loader, at the removable-media default path
#   $(ESPDIR)/spindle/kernel.elf     the kernel, debug-stripped as on the ISO
#   $(ESPDIR)/spindle/cmdline.txt    KCMDLINE, the command line GRUB passes on the other paths
#   $(ESPDIR)/startup.nsh            powers off from the firmware's shell if the loader failed
GNUEFI_INC ?= /usr/include/efi
GNUEFI_LIB ?= /usr/lib
EFI_DIR    := $(B)/efi
EFI_OBJS   := $(EFI_DIR)/loader.o $(EFI_DIR)/enter32.asm.o
EFI_APP    := $(EFI_DIR)/BOOTX64.EFI
ESPDIR     := $(B)/esp
ESP_FILES  := $(ESPDIR)/EFI/BOOT/BOOTX64.EFI $(ESPDIR)/spindle/kernel.elf \
    $(ESPDIR)/spindle/cmdline.txt $(ESPDIR)/startup.nsh
# The loader is a PE32+ application, not kernel code: position-independent (gnu-efi's crt0
# applies the relocations), UEFI's 16-bit CHAR16, no red zone (firmware interrupts run on
# our stack); GNU_EFI_USE_MS_ABI makes EFIAPI ms_abi, so firmware services are called
# directly and type-checked (no uefi_call_wrapper). gnu-efi's headers are system headers.
EFI_CFLAGS := -std=gnu11 -ffreestanding -nostdinc -isystem $(shell $(CC) -print-file-name=include) \
    -isystem $(GNUEFI_INC) -isystem $(GNUEFI_INC)/x86_64 -DGNU_EFI_USE_MS_ABI \
    -fpic -fshort-wchar -mno-red-zone -fno-stack-protector -fno-stack-check -fno-strict-aliasing \
    -fno-asynchronous-unwind-tables $(WARNINGS) -O2 -MMD -MP
# gnu-efi's recipe: a shared ELF at address 0 (elf_x86_64_efi.lds), then objcopy to PE32+
# keeping the loaded sections and the relocations; subsystem 10 = EFI application.
EFI_LDFLAGS := -nostdlib -shared -Bsymbolic -znocombreloc --no-undefined --fatal-warnings \
    -T $(GNUEFI_LIB)/elf_x86_64_efi.lds
EFI_SECTIONS := -j .text -j .sdata -j .data -j .dynamic -j .dynsym -j .rel -j .rela \
    -j '.rel.*' -j '.rela.*' -j .reloc

.PHONY: efi esp test-efi-errors
all: $(EFI_APP)
efi: $(EFI_APP)
esp: $(ESP_FILES)

$(EFI_DIR)/%.o: boot/efi/%.c $(CONFIG_STAMP)
	@mkdir -p $(@D)
	@echo "  CC      $<"
	@$(CC) $(EFI_CFLAGS) $(MJ) -c $< -o $@

$(EFI_DIR)/%.asm.o: boot/efi/%.asm $(CONFIG_STAMP)
	@mkdir -p $(@D)
	@echo "  NASM    $<"
	@$(NASM) $(NASMFLAGS) -MD $(@:.o=.d) -MP $< -o $@

$(EFI_APP): $(EFI_OBJS)
	@echo "  EFI     $@"
	@$(LD) $(EFI_LDFLAGS) $(GNUEFI_LIB)/crt0-efi-x86_64.o $(EFI_OBJS) \
	    -L$(GNUEFI_LIB) -lefi -lgnuefi -o $(EFI_DIR)/loader.so
	@$(OBJCOPY) $(EFI_SECTIONS) --target efi-app-x86_64 --subsystem=10 $(EFI_DIR)/loader.so $@

$(ESPDIR)/EFI/BOOT/BOOTX64.EFI: $(EFI_APP)
	@mkdir -p $(@D)
	@cp $< $@

$(ESPDIR)/startup.nsh: boot/efi/startup.nsh
	@mkdir -p $(@D)
	@cp $< $@

$(ESPDIR)/spindle/kernel.elf: $(KERNEL)
	@echo "  ESP     $(ESPDIR)"
	@mkdir -p $(@D)
	@$(OBJCOPY) --strip-debug $< $@

$(ESPDIR)/spindle/cmdline.txt: $(CMDLINE_STAMP)
	@mkdir -p $(@D)
	@printf '%s\n' '$(subst ','\'',$(KCMDLINE))' > $@

# The loader's error paths: a missing and a corrupted kernel.elf (the error is printed and
# the loader returns to the firmware), and a stale map key (ExitBootServices is retried).
test-efi-errors: deps
	@$(MAKE) --no-print-directory $(EFI_APP) $(KERNEL)
	@bash scripts/test-efi-errors.sh --loader $(EFI_APP) --kernel $(KERNEL) \
	    --work $(B)/efi-errors --accel $(ACCEL)

-include $(EFI_OBJS:.o=.d)

# What the runner boots: the GRUB ISO (bios, uefi) or the ESP directory (efi).
RUN_IMAGE := $(if $(filter efi,$(FIRMWARE)),$(ESPDIR),$(ISO))
RUN_DEPS  := $(if $(filter efi,$(FIRMWARE)),esp,$(ISO))

# ---- host commands
# Every run also leaves results.ktap and results.xml beside the serial log (scripts/ktap-results.py).
RESULTS := $(dir $(LOG))results
# QEMU's monitor socket beside the serial log (make nmi sends it an NMI).
MONITOR ?= $(basename $(LOG)).sock
RUNNER := bash scripts/run-qemu.sh --image $(RUN_IMAGE) --firmware $(FIRMWARE) --smp $(SMP) \
    --mem $(MEM) --accel $(ACCEL) --log $(LOG) --results $(RESULTS) \
    --monitor $(MONITOR)
# Before boot: the kernel (extra tests first), then TESTS must select at least one of its tests.
SELECT_CHECK = $(MAKE) --no-print-directory $(KERNEL) && \
    python3 scripts/ktest-list.py --kernel $(KERNEL) --tests '$(TESTS)' --check

deps:
	@bash scripts/deps.sh

run: deps
	@$(SELECT_CHECK)
	@$(MAKE) --no-print-directory $(RUN_DEPS)
	@$(RUNNER) --mode run

# The runner's status (scripts/run-qemu.sh: 0 pass, 1 test failed, 3 bug check, 4 watchdog,
# 5 no exit code, 6 lying log, 7 no workload, 124 timeout) ends the recipe: GNU make itself then exits 2 and
# names it in its `Error N` line; STATUS_FILE=path also keeps it (scripts/test.sh does).
test: deps
	@$(SELECT_CHECK)
	@$(MAKE) --no-print-directory $(RUN_DEPS)
	@rc=0; $(RUNNER) --mode test --timeout $(TIMEOUT) || rc=$$?; \
	    $(if $(STATUS_FILE),echo $$rc > '$(STATUS_FILE)';) exit $$rc

# The tests the kernel holds (Suite:case), and those TESTS selects.
.PHONY: list-tests
list-tests:
	@$(MAKE) --no-print-directory $(KERNEL)
	@python3 scripts/ktest-list.py --kernel $(KERNEL) --tests '$(TESTS)'

# QEMU halted on its gdb stub (localhost:GDB_PORT, default 1234); `make gdb` attaches.
debug: deps
	@$(MAKE) --no-print-directory $(RUN_DEPS)
	@$(RUNNER) --mode debug --gdb-port $(GDB_PORT)

# gdb on the ELF64 kernel (same DBG and CC as `make debug`), attached, stopped at
# KiSystemStartup, with Spindle's commands (scripts/gdb/spindle.gdb; `help spindle`).
gdb:
	@test -f $(KERNEL) || { echo "error: $(KERNEL) not built: run 'make debug' first" >&2; exit 1; }
	@$(MAKE) --no-print-directory $(GDB_AUTOLOAD)
	@gdb -q -iex 'add-auto-load-safe-path $(abspath $(B))' -ex 'set $$spindle_gdb_port = $(GDB_PORT)' \
	    -x scripts/gdb/spindle.gdb $(KERNEL)

# The scripted gdb session: the GdbTarget tests (tests/gdb_targets.c) run under gdb, which
# checks stepping, a breakpoint on the last processor and the spindle-* commands, then
# detaches; the kernel must finish its run (scripts/test-gdb.sh).
.PHONY: test-gdb
test-gdb: deps
	@$(MAKE) --no-print-directory $(ISO) $(GDB_AUTOLOAD) TESTS='GdbTarget:*'
	@bash scripts/test-gdb.sh --kernel $(KERNEL) --image $(ISO) --smp $(SMP) --dbg $(DBG) \
	    $(if $(filter-out file default,$(origin GDB_PORT)),--port $(GDB_PORT)) \
	    --firmware $(if $(filter uefi,$(FIRMWARE)),uefi,bios)

# Microbenchmarks (tests/bench/): the Bench suite in a free build with bench=1 on the kernel
# command line (BENCH_MS=n sets bench_ms, the contended window), then scripts/bench-report.py
# writes $(BENCH_OUT)/report.md, results.json and PNG plots. Speed never fails; the exit status
# is non-zero only when the run failed or result lines are missing.
BENCH_MS  ?=
BENCH_OUT ?= build/bench
BENCH_B   := build/free$(if $(filter clang%,$(notdir $(CC))),-clang,)
.PHONY: bench bench-compare
bench: deps
	@rc=0; $(MAKE) --no-print-directory test DBG=0 TESTS='Bench:*' \
	    CMDLINE='bench=1 $(if $(BENCH_MS),bench_ms=$(BENCH_MS) )$(CMDLINE)' || rc=$$?; \
	    python3 scripts/bench-report.py --log $(LOG) --out $(BENCH_OUT) --smp $(SMP) \
	    --accel $(ACCEL) --cpu max --status $$rc --elf $(BENCH_B)/kernel.elf \
	    --bench-objects '$(BENCH_B)/obj/tests/bench/*.o'

# make bench at SMP=8 and SMP=2 and the Linux peer kit (PEER_KIT) on the same QEMU, then
# $(BENCH_OUT)/compare.md: Spindle's rows next to Linux's (scripts/bench-compare.sh).
# BENCH_BOOTS=n boots each kernel n times per configuration and compares the medians.
PEER_KIT ?= ../shared/peer/linux-lockbench
bench-compare: deps
	@bash scripts/bench-compare.sh --kit $(PEER_KIT) --out $(BENCH_OUT) --accel $(ACCEL) \
	    --boots $(BENCH_BOOTS) $(if $(BENCH_MS),--bench-ms $(BENCH_MS))

# The stress mode (tests/torture/): the Torture suite with torture=1 on the kernel command line,
# every primitive on every processor for DURATION seconds (5..3000), with interrupt storms.
# INJECT=1 (checked build) adds inject=1: random delays and IPIs inside the primitives' windows.
.PHONY: torture
torture: deps
	@$(MAKE) --no-print-directory test TESTS='Torture:*' TIMEOUT=$$(( $(DURATION) + $(TIMEOUT) )) \
	    CMDLINE='torture=1 duration=$(DURATION) $(if $(filter 1,$(INJECT)),inject=1) $(CMDLINE)'

# The kernel without tests/ boots, says it has nothing to run and exits 41 (HAL_EXIT_IDLE).
.PHONY: test-notests
test-notests: deps
	@$(MAKE) --no-print-directory NOTESTS=1 iso
	@bash scripts/run-qemu.sh --image $(B)-notests/spindle.iso --firmware bios --smp 2 \
	    --mem $(MEM) --accel $(ACCEL) --log $(B)-notests/serial.log --timeout 300 \
	    >$(B)-notests/run.out 2>&1 || true
	@cat $(B)-notests/run.out
	@grep -q 'Spindle: no workload linked in; nothing to run' $(B)-notests/serial.log \
	    && tail -n 1 $(B)-notests/run.out | grep -q '(qemu exit 41)' \
	    && echo "test-notests: OK (no workload, qemu exit 41)" \
	    || { echo "test-notests: FAILED (expected the no-workload line and qemu exit 41)" >&2; exit 1; }

# Model checking (models/*.pml, scripts/verify.sh): every model searched exhaustively with
# spin, and every deliberately broken copy (MUTANT_*) must be rejected. Output in build/verify/.
.PHONY: verify
verify: deps
	@bash scripts/verify.sh --out build/verify

# An NMI on every processor of the running `make run` / `make test` (same LOG or MONITOR):
# the kernel stops with STOP 0x80 and every processor's backtrace, even when all of them
# spin with interrupts off.
.PHONY: nmi test-faults
nmi:
	@bash scripts/qemu-monitor.sh $(MONITOR) nmi

# The Fault suite (tests/faults/): each case boots alone with faults=1 and must end in its
# report (exit code, STOP line, the faulting function in the right backtrace).
test-faults: deps
	@bash scripts/test-faults.sh

# The API reference, docs/api.md, is generated from include/wdm.h and the contract comments
# in kernel/ (scripts/gen-apidoc.py). check-docs fails if it is stale or a routine has none.
.PHONY: docs check-docs
docs:
	@python3 scripts/gen-apidoc.py -o docs/api.md && echo "  GEN     docs/api.md"

check-docs:
	@python3 scripts/gen-apidoc.py -o build/docs/api.md
	@diff -u docs/api.md build/docs/api.md >build/docs/api.diff \
	    || { head -40 build/docs/api.diff; echo "check-docs: docs/api.md is stale: run 'make docs'" >&2; exit 1; }
	@echo "check-docs: OK (docs/api.md matches the sources)"

check-layering:
	@bash scripts/check-layering.sh

check-format:
	@bash scripts/check-format.sh

# Every header compiles on its own (STYLE.md §2), with the kernel's flags.
HEADERS := $(sort $(wildcard include/*.h lib/*.h arch/x86_64/*.h hal/*.h kernel/*.h kernel/*/*.h \
              tests/*.h tests/harness/*.h))
check-headers:
	@for h in $(HEADERS); do \
	    echo "#include \"$$h\"" | $(CC) $(filter-out -MMD -MP,$(CFLAGS)) -x c -c -o /dev/null - \
	        || { echo "check-headers: $$h does not compile on its own" >&2; exit 1; }; \
	done; echo "check-headers: OK ($(words $(HEADERS)) headers)"

# ---- static analysis (STYLE.md §11)
# cppcheck and clang-tidy over kernel/, hal/, arch/, lib/ and boot/efi/; zero findings pass.
# Configuration: scripts/cppcheck.supp and .clang-tidy (boot/efi/.clang-tidy), each exception
# with its reason. clang-tidy reads the compile commands of the clang build (-MJ above).
CLANG_B := build/$(if $(filter 1,$(DBG)),checked,free)-clang
.PHONY: cppcheck clang-tidy check
cppcheck:
	@bash scripts/cppcheck.sh

# An object built before clang wrote -MJ fragments has none: rebuild it.
clang-tidy:
	@find $(CLANG_B)/obj $(CLANG_B)/efi -name '*.o' ! -name '*.asm.o' 2>/dev/null \
	    | while read -r o; do [ -f "$$o.json" ] || rm -f "$$o"; done
	@$(MAKE) --no-print-directory -j2 CC=clang kernel efi
	@bash scripts/clang-tidy.sh --build $(CLANG_B)

# Everything that needs no QEMU, in order (scripts/check.sh): builds with gcc and clang,
# check-headers, check-layering, check-format, cppcheck, clang-tidy. A failing step does not
# stop the others; ends with "check: N passed, N failed (S s)", exit 0 iff none failed.
check:
	@MAKE='$(MAKE)' DBG=$(DBG) bash scripts/check.sh

clean:
	rm -rf build

help:
	@echo "Spindle make targets:"
	@echo "  make            build $(B)/kernel.elf and the GRUB ISO"
	@echo "  make run        boot in QEMU (serial on this terminal); the suite runs and the kernel exits"
	@echo "  make test       the same, non-interactive, with a timeout; exit 0 iff every test passed"
	@echo "                  (scripts/test.sh VAR=...: the same with the runner's own exit status)"
	@echo "  make list-tests the tests in the kernel (Suite:case) that TESTS selects"
	@echo "  make debug      boot with QEMU halted on its gdb stub (localhost:GDB_PORT)"
	@echo "  make gdb        gdb with symbols, attached to 'make debug', stopped at KiSystemStartup"
	@echo "  make test-gdb   scripted gdb session: stepping, breakpoints, bt through traps, spindle-* commands"
	@echo "  make test-efi-errors  the EFI loader's error and retry paths under OVMF"
	@echo "  make esp / efi  build the EFI system partition / only the GNU-EFI loader"
	@echo "  make bench      lock benchmark (free build, SMP CPUs): build/bench/report.md, results.json, plots"
	@echo "  make bench-compare  make bench at SMP=8 and 2 and the Linux peer kit: build/bench/compare.md"
	@echo "                  (with the waiting targets judged, and every row against the previous run)"
	@echo "  make torture    stress mode: every primitive on every CPU, interrupt storms (DURATION=s,"
	@echo "                  INJECT=1: fault injection in the primitives' windows, checked build)"
	@echo "  make test-notests   boot the kernel built without tests/ (NOTESTS=1): it has nothing to run"
	@echo "  make docs       regenerate docs/api.md from the contract comments"
	@echo "  make check-docs     check that docs/api.md is current and every routine has a contract"
	@echo "  make verify     model-check models/*.pml with spin; every mutant must be rejected"
	@echo "  make test-faults  the Fault suite: each fault case alone, its report checked"
	@echo "  make nmi        NMI to every CPU of the running make run/test (STOP 0x80 report)"
	@echo "  make check-layering  check the include rules"
	@echo "  make check-headers   check that every header compiles on its own"
	@echo "  make check-format    check the C formatting against .clang-format"
	@echo "  make cppcheck   cppcheck over kernel/ hal/ arch/ lib/ boot/efi/ (scripts/cppcheck.supp)"
	@echo "  make clang-tidy clang-tidy over the same, with .clang-tidy (builds with clang first)"
	@echo "  make check      builds (gcc, clang), check-headers, -layering, -format, cppcheck, clang-tidy"
	@echo "  make clean      remove build/"
	@echo "Variables (checked before anything builds; now):"
	@echo "  SMP=$(SMP)          processors, 1..16"
	@echo "  DBG=$(DBG)          1 checked build, 0 free build"
	@echo "  TESTS='$(TESTS)'    comma-separated globs over Suite:case (* and ?); empty = all"
	@echo "  REPEAT=$(REPEAT)       run the selection this many times, 1..100000"
	@echo "  SEED=$(SEED)         KtRandom seed, 0..9999999999999999999"
	@echo "  VERBOSE=$(VERBOSE)      1: a '# running' line before each test"
	@echo "  TIMEOUT=$(TIMEOUT)    host timeout of make test in seconds, 0..604800 (0 = none)"
	@echo "  ACCEL=$(ACCEL)      tcg | kvm"
	@echo "  FIRMWARE=$(FIRMWARE)  bios | uefi | efi"
	@echo "  MEM=$(MEM)        guest memory in MiB, 64..16384"
	@echo "  GDB_PORT=$(GDB_PORT)  gdb stub port of make debug / gdb / test-gdb, 1024..65535"
	@echo "  EXTRA_TESTS='$(EXTRA_TESTS)'  more test files and globs, e.g. 'mytests/*.c'"
	@echo "  CMDLINE='$(CMDLINE)'  extra kernel arguments (not tests= seed= repeat= verbose= smp=)"
	@echo "  CC=$(CC)        gcc | clang"
	@echo "  B=$(B)  build folder; LOG=$(LOG): serial log, results.ktap/.xml beside it"
	@echo "  DURATION=$(DURATION)     seconds of make torture, 5..3000"
	@echo "  INJECT=$(INJECT)        1: make torture with fault injection (inject=1, checked build)"
	@echo "  NOTESTS=$(NOTESTS)      1: the kernel without tests/ (build/<flavour>-notests)"
	@echo "  BENCH_MS=$(BENCH_MS)  make bench's contended window in ms, 10..5000 (empty: 200)"
	@echo "  BENCH_OUT=$(BENCH_OUT)  make bench's report folder; PEER_KIT=path: bench-compare's Linux kit"
	@echo "  BENCH_BOOTS=$(BENCH_BOOTS)    make bench-compare's boots of each kernel, 1..9 (medians over them)"
	@echo "  STATUS_FILE=path  make test writes the runner's exit status there"
