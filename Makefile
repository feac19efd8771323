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
ifneq ($(filter 0 1,$(DBG)),$(DBG))
$(error DBG must be 0 or 1)
endif

FLAVOUR := $(if $(filter 1,$(DBG)),checked,free)$(if $(filter clang%,$(notdir $(CC))),-clang,)
# NOTESTS=1: the kernel without tests/ (no workload), in build/<flavour>-notests.
ifeq ($(NOTESTS),1)
FLAVOUR := $(FLAVOUR)-notests
EXTRA_TESTS :=
endif
B       := build/$(FLAVOUR)
NASM    ?= nasm
NM      ?= nm
OBJCOPY ?= objcopy

# ---- compiler flags (STYLE.md §9)
# Freestanding C: no libc, no hosted headers, no implicit PIC/stack protector.
CFLAGS_BASE := -std=gnu11 -ffreestanding -nostdinc -isystem $(shell $(CC) -print-file-name=include) \
    -fno-pic -fno-pie -fno-common -fno-stack-protector -fno-builtin-printf
# Frame pointers give every backtrace; no unwind tables needed.
CFLAGS_BASE += -fno-omit-frame-pointer -fno-asynchronous-unwind-tables
# CONTAINING_RECORD and list casts are everywhere.
CFLAGS_BASE += -fno-strict-aliasing
# Kernel code: interrupts would overwrite a red zone; the image lives in the top 2 GiB;
# no SSE state is ever saved, so none may be used.
CFLAGS_BASE += -mno-red-zone -mcmodel=kernel -mgeneral-regs-only -mcx16
# NT's WCHAR is 16 bits.
CFLAGS_BASE += -fshort-wchar
ifneq ($(filter clang%,$(notdir $(CC))),)
CFLAGS_BASE += --target=x86_64-unknown-none-elf
endif
WARNINGS := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
    -Wmissing-declarations -Wundef -Wpointer-arith -Wwrite-strings -Wvla -Wimplicit-fallthrough \
    -Wnull-dereference -Wformat=2 -Wdouble-promotion -Wno-unused-parameter \
    -Wno-multichar  # DDK pool tags are multi-character constants ('looP')
OPT      := -O2 -g
CPPFLAGS := -DDBG=$(DBG) -I. -Iinclude -Itests
CFLAGS   := $(CFLAGS_BASE) $(WARNINGS) $(OPT) $(CPPFLAGS) -MMD -MP
NASMFLAGS := -f elf64 -w+all -Werror -g -F dwarf
LD       ?= ld
LDFLAGS  := -nostdlib -static -z max-page-size=4096 -z noexecstack -T linker.ld

# ---- sources: every file in the layer folders is built; nothing to register
C_SRCS   := $(sort $(wildcard arch/x86_64/*.c hal/*.c kernel/*.c kernel/*/*.c lib/*.c \
              $(if $(filter 1,$(NOTESTS)),,tests/harness/*.c tests/*.c tests/drivers/*.c \
              tests/bench/*.c tests/torture/*.c)))
ASM_SRCS := $(sort $(wildcard boot/*.asm arch/x86_64/*.asm))
OBJS     := $(C_SRCS:%.c=$(B)/obj/%.o) $(ASM_SRCS:%.asm=$(B)/obj/%.asm.o)
EXTRA_OBJS := $(foreach f,$(EXTRA_TESTS),$(B)/extra/$(subst /,_,$(basename $(abspath $(f)))).o)

KERNEL   := $(B)/kernel.elf
ISO      := $(B)/spindle.iso
ISODIR   := $(B)/isodir

KCMDLINE := tests=$(TESTS) seed=$(SEED) repeat=$(REPEAT) verbose=$(VERBOSE) smp=$(SMP) $(CMDLINE)

# A stamp that changes whenever the configuration that shapes the image changes.
CONFIG_STAMP := $(B)/config.stamp
CONFIG_TEXT  := CC=$(CC) DBG=$(DBG) EXTRA_TESTS=$(abspath $(EXTRA_TESTS))
$(shell mkdir -p $(B) && { [ -f $(CONFIG_STAMP) ] && [ "$$(cat $(CONFIG_STAMP))" = "$(CONFIG_TEXT)" ] || echo "$(CONFIG_TEXT)" > $(CONFIG_STAMP); })
CMDLINE_STAMP := $(B)/cmdline.stamp
$(shell mkdir -p $(B) && { [ -f $(CMDLINE_STAMP) ] && [ "$$(cat $(CMDLINE_STAMP))" = "$(KCMDLINE)" ] || echo "$(KCMDLINE)" > $(CMDLINE_STAMP); })

.PHONY: all kernel iso run test debug gdb clean help deps check-layering check-headers check-format

all: $(KERNEL) $(ISO)
kernel: $(KERNEL)
iso: $(ISO)

$(B)/obj/%.o: %.c $(CONFIG_STAMP)
	@mkdir -p $(@D)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS) -c $< -o $@

$(B)/obj/%.asm.o: %.asm $(CONFIG_STAMP)
	@mkdir -p $(@D)
	@echo "  NASM    $<"
	@$(NASM) $(NASMFLAGS) -MD $(@:.o=.d) -MP -Iboot/ -Iarch/x86_64/ $< -o $@

define EXTRA_RULE
$(B)/extra/$(subst /,_,$(basename $(abspath $(1)))).o: $(1) $(CONFIG_STAMP)
	@mkdir -p $$(@D)
	@echo "  CC      $(1)"
	@$$(CC) $$(CFLAGS) -c $(1) -o $$@
endef
$(foreach f,$(EXTRA_TESTS),$(eval $(call EXTRA_RULE,$(f))))

# Two links: the first gives the function addresses, from which the symbol table for
# backtraces is generated; the table sits after all code, so the second link moves no
# function (checked below).
$(KERNEL): $(OBJS) $(EXTRA_OBJS) linker.ld scripts/gen-ksyms.sh $(CONFIG_STAMP)
	@echo "  LD      $@"
	@$(LD) $(LDFLAGS) -o $(B)/kernel.pass1.elf $(OBJS) $(EXTRA_OBJS)
	@bash scripts/gen-ksyms.sh $(NM) $(B)/kernel.pass1.elf > $(B)/ksyms.c
	@$(CC) $(CFLAGS) -c $(B)/ksyms.c -o $(B)/ksyms.o
	@$(LD) $(LDFLAGS) -o $@ $(OBJS) $(EXTRA_OBJS) $(B)/ksyms.o
	@cmp -s <($(NM) -n $(B)/kernel.pass1.elf | grep -i ' t ' | grep -v ' __') <($(NM) -n $@ | grep -i ' t ' | grep -v ' __') \
	    || { echo "error: the symbol table moved code; fix linker.ld" >&2; mv $@ $@.bad; exit 1; }
	@if command -v grub-file >/dev/null; then grub-file --is-x86-multiboot2 $@ \
	    || { echo "error: $@ is not a multiboot2 image" >&2; rm -f $@; exit 1; }; fi

$(ISO): $(KERNEL) boot/grub.cfg $(CMDLINE_STAMP)
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
	@$(CC) $(EFI_CFLAGS) -c $< -o $@

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
RUNNER := bash scripts/run-qemu.sh --image $(RUN_IMAGE) --firmware $(FIRMWARE) --smp $(SMP) \
    --mem $(MEM) --accel $(ACCEL) --log $(LOG)

deps:
	@bash scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory $(RUN_DEPS)
	@$(RUNNER) --mode run

test: deps
	@$(MAKE) --no-print-directory $(RUN_DEPS)
	@$(RUNNER) --mode test --timeout $(TIMEOUT)

# QEMU halted on its gdb stub (localhost:GDB_PORT, default 1234); `make gdb` attaches.
debug: deps
	@$(MAKE) --no-print-directory $(RUN_DEPS)
	@$(RUNNER) --mode debug --gdb-port $(or $(GDB_PORT),1234)

# gdb on the ELF64 kernel (same DBG and CC as `make debug`), attached, stopped at
# KiSystemStartup, with Spindle's commands (scripts/gdb/spindle.gdb; `help spindle`).
gdb:
	@test -f $(KERNEL) || { echo "error: $(KERNEL) not built: run 'make debug' first" >&2; exit 1; }
	@gdb -q -ex 'set $$spindle_gdb_port = $(or $(GDB_PORT),1234)' -x scripts/gdb/spindle.gdb \
	    $(KERNEL)

# The scripted gdb session: the GdbTarget tests (tests/gdb_targets.c) run under gdb, which
# checks stepping, a breakpoint on the last processor and the spindle-* commands, then
# detaches; the kernel must finish its run (scripts/test-gdb.sh).
.PHONY: test-gdb
test-gdb: deps
	@$(MAKE) --no-print-directory $(ISO) TESTS='GdbTarget:*'
	@bash scripts/test-gdb.sh --kernel $(KERNEL) --image $(ISO) --smp $(SMP) --dbg $(DBG) \
	    --firmware $(if $(filter uefi,$(FIRMWARE)),uefi,bios)

# Microbenchmarks (tests/bench/): the Bench suite in a free build with bench=1 on the kernel
# command line (BENCH_MS=n sets bench_ms, the contended window), then scripts/bench-report.py
# writes $(BENCH_OUT)/report.md, results.json and PNG plots. Speed never fails; the exit status
# is non-zero only when the run failed or result lines are missing.
BENCH_MS  ?=
BENCH_OUT ?= build/bench
.PHONY: bench bench-compare
bench: deps
	@rc=0; $(MAKE) --no-print-directory test DBG=0 TESTS='Bench:*' \
	    CMDLINE='bench=1 $(if $(BENCH_MS),bench_ms=$(BENCH_MS) )$(CMDLINE)' || rc=$$?; \
	    python3 scripts/bench-report.py --log $(LOG) --out $(BENCH_OUT) --smp $(SMP) \
	    --accel $(ACCEL) --cpu max --status $$rc

# make bench at SMP=8 and SMP=2 and the Linux peer kit (PEER_KIT) on the same QEMU, then
# $(BENCH_OUT)/compare.md: Spindle's rows next to Linux's (scripts/bench-compare.sh).
PEER_KIT ?= ../shared/peer/linux-lockbench
bench-compare: deps
	@bash scripts/bench-compare.sh --kit $(PEER_KIT) --out $(BENCH_OUT) --accel $(ACCEL) \
	    $(if $(BENCH_MS),--bench-ms $(BENCH_MS))

# The stress mode (tests/torture/): the Torture suite with torture=1 on the kernel command line,
# every primitive on every processor for DURATION seconds (5..3000), with interrupt storms.
.PHONY: torture
DURATION ?= 60
torture: deps
	@$(MAKE) --no-print-directory test TESTS='Torture:*' TIMEOUT=$$(( $(DURATION) + $(TIMEOUT) )) \
	    CMDLINE='torture=1 duration=$(DURATION) $(CMDLINE)'

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

clean:
	rm -rf build

help:
	@echo "Spindle make targets:"
	@echo "  make            build $(B)/kernel.elf and the GRUB ISO"
	@echo "  make run        boot in QEMU (serial on this terminal); the suite runs and the kernel exits"
	@echo "  make test       the same, non-interactive, with a timeout; exit 0 iff every test passed"
	@echo "  make debug      boot with QEMU halted on its gdb stub (localhost:1234)"
	@echo "  make gdb        gdb with symbols, attached to 'make debug', stopped at KiSystemStartup"
	@echo "  make test-gdb   scripted gdb session: stepping, a breakpoint on the last CPU, spindle-* commands"
	@echo "  make test-efi-errors  the EFI loader's error and retry paths under OVMF"
	@echo "  make esp / efi  build the EFI system partition / only the GNU-EFI loader"
	@echo "  make bench      lock benchmark (free build, SMP CPUs): build/bench/report.md, results.json, plots"
	@echo "  make bench-compare  make bench at SMP=8 and 2 and the Linux peer kit: build/bench/compare.md"
	@echo "  make torture    stress mode: every primitive on every CPU, interrupt storms (DURATION=s)"
	@echo "  make test-notests   boot the kernel built without tests/ (NOTESTS=1): it has nothing to run"
	@echo "  make verify     model-check models/*.pml with spin; every mutant must be rejected"
	@echo "  make check-layering  check the include rules of STYLE.md §1"
	@echo "  make check-headers   check that every header compiles on its own"
	@echo "  make check-format    check the C formatting against .clang-format (STYLE.md §10)"
	@echo "  make clean      remove build/"
	@echo "Variables: SMP=$(SMP) DBG=$(DBG) TESTS='glob,glob' REPEAT=$(REPEAT) SEED=$(SEED)"
	@echo "  VERBOSE=$(VERBOSE) TIMEOUT=$(TIMEOUT) ACCEL=tcg|kvm FIRMWARE=bios|uefi|efi MEM=$(MEM)"
	@echo "  GDB_PORT=1234 (the gdb stub port of make debug / make gdb)"
	@echo "  EXTRA_TESTS='dir/*.c' CMDLINE='extra kernel arguments' CC=gcc|clang"
	@echo "  B=build/<dir> LOG=<serial log>: separate build and log, for runs side by side"
