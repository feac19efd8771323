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
CC          ?= gcc

ifeq ($(origin CC),default)
CC := gcc
endif
ifneq ($(filter 0 1,$(DBG)),$(DBG))
$(error DBG must be 0 or 1)
endif

FLAVOUR := $(if $(filter 1,$(DBG)),checked,free)$(if $(filter clang%,$(notdir $(CC))),-clang,)
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
              tests/harness/*.c tests/*.c tests/drivers/*.c))
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

.PHONY: all kernel iso run test debug gdb clean help deps check-layering

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

# ---- host commands
RUNNER := bash scripts/run-qemu.sh --image $(ISO) --firmware $(FIRMWARE) --smp $(SMP) \
    --mem $(MEM) --accel $(ACCEL) --log build/serial.log

deps:
	@bash scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory $(ISO)
	@$(RUNNER) --mode run

test: deps
	@$(MAKE) --no-print-directory $(ISO)
	@$(RUNNER) --mode test --timeout $(TIMEOUT)

debug: deps
	@$(MAKE) --no-print-directory $(ISO)
	@$(RUNNER) --mode debug

gdb:
	@gdb -q $(KERNEL) -x scripts/gdb/spindle.gdb

check-layering:
	@bash scripts/check-layering.sh

clean:
	rm -rf build

help:
	@echo "Spindle make targets:"
	@echo "  make            build $(B)/kernel.elf and the GRUB ISO"
	@echo "  make run        boot in QEMU (serial on this terminal); the suite runs and the kernel exits"
	@echo "  make test       the same, non-interactive, with a timeout; exit 0 iff every test passed"
	@echo "  make debug      boot with QEMU halted on its gdb stub (localhost:1234)"
	@echo "  make gdb        gdb with symbols, attached to 'make debug', stopped at KiSystemStartup"
	@echo "  make check-layering  check the include rules of STYLE.md §1"
	@echo "  make clean      remove build/"
	@echo "Variables: SMP=$(SMP) DBG=$(DBG) TESTS='glob,glob' REPEAT=$(REPEAT) SEED=$(SEED)"
	@echo "  VERBOSE=$(VERBOSE) TIMEOUT=$(TIMEOUT) ACCEL=$(ACCEL) FIRMWARE=$(FIRMWARE) MEM=$(MEM)"
	@echo "  EXTRA_TESTS='dir/*.c' CMDLINE='extra kernel arguments' CC=gcc|clang"
