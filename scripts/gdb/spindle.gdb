# SPDX-License-Identifier: MIT
# scripts/gdb/spindle.gdb: what `make gdb` runs (from the repository root).
# Attaches gdb to the QEMU that `make debug` left halted on its gdb stub, loads
# Spindle's commands (scripts/gdb/spindle.py; `help spindle`), and runs the
# kernel to KiSystemStartup.
#
#   $spindle_gdb_port   the stub's TCP port (make sets it from GDB_PORT; default 1234)
#
# The stub starts in real mode at the reset vector, long before GRUB loads the
# kernel, so the stop at KiSystemStartup must be a hardware breakpoint: a
# software one would be written into memory GRUB then overwrites. QEMU's x86-64
# stub always describes the 64-bit register set (cr8, gs_base and efer
# included), so once the kernel runs in long mode the symbols, breakpoints and
# registers line up with the ELF64 image.

set confirm off
set architecture i386:x86-64
# Opening kernel.elf normally auto-loads kernel.elf-gdb.py, which loads spindle.py
# (it sets $spindle_autoloaded); without it (auto-load not allowed), load it here.
if $_isvoid($spindle_autoloaded)
  source scripts/gdb/spindle.py
end

if $_isvoid($spindle_gdb_port)
  set $spindle_gdb_port = 1234
end
spindle-attach
thbreak KiSystemStartup
continue
