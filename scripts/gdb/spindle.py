# SPDX-License-Identifier: MIT
"""
Spindle's gdb commands: kernel-aware views of processors, IRQL, spin locks,
DPC queues, device queues, IRPs and LIST_ENTRY chains, for a kernel stopped on
QEMU's gdb stub. Loaded by scripts/gdb/spindle.gdb (`make gdb`); `help spindle`
lists the commands.

gdb threads are vCPUs (QEMU: thread N = vCPU N-1). A thread is matched to its
processor through its GS base, which points at that processor's KPRCB
(kernel/ke/ke.h: Self at gs:0); a vCPU Spindle has not started has GS base 0.

Layouts: KPRCB and the harness state come from the kernel's debug information;
the DDK structures (KDPC, KSPIN_LOCK_QUEUE, KDEVICE_QUEUE, IRP,
IO_STACK_LOCATION) use the offsets include/wdm.h pins with _Static_assert, so
the commands work even where a type is absent from the debug information.
"""
import os
import re
import struct

import gdb
import gdb.FrameDecorator
import gdb.printing
import gdb.unwinder

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# ---------------------------------------------------------------- constants (include/wdm.h)

# Offsets pinned by include/wdm.h's _Static_asserts: (type, field) -> offset.
OFFSETS = {
    ("LIST_ENTRY", "Flink"): 0,
    ("LIST_ENTRY", "Blink"): 8,
    ("KSPIN_LOCK_QUEUE", "Next"): 0,
    ("KSPIN_LOCK_QUEUE", "Lock"): 8,
    ("KLOCK_QUEUE_HANDLE", "OldIrql"): 16,
    ("KDPC", "Type"): 0,
    ("KDPC", "Importance"): 1,
    ("KDPC", "Number"): 2,
    ("KDPC", "DpcListEntry"): 8,
    ("KDPC", "DeferredRoutine"): 24,
    ("KDPC", "DeferredContext"): 32,
    ("KDPC", "SystemArgument1"): 40,
    ("KDPC", "SystemArgument2"): 48,
    ("KDPC", "DpcData"): 56,
    ("KDEVICE_QUEUE", "Type"): 0,
    ("KDEVICE_QUEUE", "Size"): 2,
    ("KDEVICE_QUEUE", "DeviceListHead"): 8,
    ("KDEVICE_QUEUE", "Lock"): 24,
    ("KDEVICE_QUEUE", "Busy"): 32,
    ("KDEVICE_QUEUE_ENTRY", "DeviceListEntry"): 0,
    ("KDEVICE_QUEUE_ENTRY", "SortKey"): 16,
    ("KDEVICE_QUEUE_ENTRY", "Inserted"): 20,
    ("IRP", "Type"): 0x00,
    ("IRP", "Size"): 0x02,
    ("IRP", "Flags"): 0x10,
    ("IRP", "AssociatedIrp"): 0x18,
    ("IRP", "IoStatus.Status"): 0x30,
    ("IRP", "IoStatus.Information"): 0x38,
    ("IRP", "PendingReturned"): 0x41,
    ("IRP", "StackCount"): 0x42,
    ("IRP", "CurrentLocation"): 0x43,
    ("IRP", "Cancel"): 0x44,
    ("IRP", "CancelIrql"): 0x45,
    ("IRP", "UserEvent"): 0x50,
    ("IRP", "CancelRoutine"): 0x68,
    ("IRP", "Tail.Overlay.DeviceQueueEntry"): 0x78,
    ("IRP", "Tail.Overlay.ListEntry"): 0xA8,
    ("IRP", "Tail.Overlay.CurrentStackLocation"): 0xB8,
    ("IO_STACK_LOCATION", "MajorFunction"): 0,
    ("IO_STACK_LOCATION", "MinorFunction"): 1,
    ("IO_STACK_LOCATION", "Flags"): 2,
    ("IO_STACK_LOCATION", "Control"): 3,
    ("IO_STACK_LOCATION", "DeviceObject"): 40,
    ("IO_STACK_LOCATION", "CompletionRoutine"): 56,
    ("IO_STACK_LOCATION", "Context"): 64,
}
SIZES = {"KDPC": 64, "KDEVICE_QUEUE": 40, "IRP": 0xD0, "IO_STACK_LOCATION": 72}

LOCK_QUEUE_WAIT = 1
LOCK_QUEUE_OWNER = 2
DPC_OBJECT = 19
DEVICE_QUEUE_OBJECT = 20
THREADED_DPC_OBJECT = 26
IO_TYPE_IRP = 6
IMPORTANCE = {0: "Low", 1: "Medium", 2: "High", 3: "MediumHigh"}
MAXIMUM_PROCESSORS_FALLBACK = 64
LIST_LIMIT = 100000  # entries walked before a chain is called a cycle

IRQL_NAMES = {
    0: "PASSIVE_LEVEL",
    1: "APC_LEVEL",
    2: "DISPATCH_LEVEL",
    12: "SYNCH_LEVEL",
    13: "CLOCK_LEVEL",
    14: "IPI_LEVEL",
    15: "HIGH_LEVEL",
}


def irql_name(irql):
    if irql in IRQL_NAMES:
        return IRQL_NAMES[irql]
    if 3 <= irql <= 11:
        return "DIRQL"
    return "?"


def _wdm_defines(pattern):
    """{value: name} for `#define NAME value` lines of include/wdm.h matching pattern."""
    names = {}
    try:
        with open(os.path.join(ROOT, "include", "wdm.h"), encoding="utf-8") as header:
            for line in header:
                match = re.match(pattern, line)
                if match and int(match.group(2), 16) not in names:
                    names[int(match.group(2), 16)] = match.group(1)
    except OSError:
        pass
    return names


STATUS_NAMES = _wdm_defines(r"#define\s+(STATUS_\w+)\s+\(\(NTSTATUS\)0x([0-9A-Fa-f]+)L?\)")
IRP_MJ_NAMES = _wdm_defines(r"#define\s+(IRP_MJ_\w+)\s+0x([0-9A-Fa-f]+)\b")
IRP_MJ_NAMES.pop(0x1B, None)
IRP_MJ_NAMES[0x1B] = "IRP_MJ_PNP"

# ---------------------------------------------------------------- memory and symbols


def inferior():
    return gdb.selected_inferior()


def read(address, size):
    return bytes(inferior().read_memory(address, size))


def u8(address):
    return read(address, 1)[0]


def u16(address):
    return int.from_bytes(read(address, 2), "little")


def s16(address):
    return int.from_bytes(read(address, 2), "little", signed=True)


def u32(address):
    return int.from_bytes(read(address, 4), "little")


def u64(address):
    return int.from_bytes(read(address, 8), "little")


def s8(address):
    return int.from_bytes(read(address, 1), "little", signed=True)


def readable(address, size=8):
    try:
        read(address, size)
        return True
    except gdb.MemoryError:
        return False


def offset(type_name, field):
    return OFFSETS[(type_name, field)]


def symbol(address):
    """'Name+0xoff' for a code or data address, or '' when no symbol covers it."""
    if address == 0:
        return ""
    try:
        block = gdb.current_progspace().block_for_pc(address)
    except RuntimeError:
        block = None
    while block is not None and block.function is None:
        block = block.superblock
    if block is not None and block.function is not None:
        start = block.function.value().address
        delta = address - int(start) if start is not None else 0
        name = block.function.print_name
        return name if delta == 0 else "%s+0x%x" % (name, delta)
    try:
        text = gdb.execute("info symbol 0x%x" % address, to_string=True)
    except gdb.error:
        return ""
    match = re.match(r"(\S+)(?: \+ (\d+))? in section", text)
    if not match:
        return ""
    return match.group(1) if not match.group(2) else "%s+0x%x" % (match.group(1),
                                                                 int(match.group(2)))


def pointer(address):
    """'0x... <symbol>' or 'NULL'."""
    if address == 0:
        return "NULL"
    name = symbol(address)
    return "0x%x <%s>" % (address, name) if name else "0x%x" % address


def address_of(argument, struct_names=()):
    """
    The address an argument names: a pointer's value, an integer, or the
    address of an lvalue whose type is one of struct_names (so `spindle-lock
    MyLock` and `spindle-lock &MyLock` mean the same).
    """
    if not argument:
        raise gdb.GdbError("an address expression is needed")
    value = gdb.parse_and_eval(argument)
    value_type = value.type.strip_typedefs()
    if value_type.code == gdb.TYPE_CODE_PTR:
        return int(value)
    names = {str(value.type.unqualified())} | {str(value_type.unqualified())}
    if value.address is not None and (names & set(struct_names)
                                      or value_type.code in (gdb.TYPE_CODE_STRUCT,
                                                             gdb.TYPE_CODE_UNION)):
        return int(value.address)
    if value_type.code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_ENUM, gdb.TYPE_CODE_BOOL):
        return int(value) & 0xFFFFFFFFFFFFFFFF
    raise gdb.GdbError("'%s' is not an address (type %s)" % (argument, value.type))


def lookup_type(name):
    try:
        return gdb.lookup_type(name)
    except gdb.error:
        return None


def lookup_static(name):
    """A global or file-static variable's value, or None."""
    for finder in (gdb.lookup_global_symbol, gdb.lookup_static_symbol):
        try:
            found = finder(name)
        except (gdb.error, AttributeError):
            found = None
        if found is not None:
            return found.value()
    try:
        return gdb.parse_and_eval(name)
    except gdb.error:
        return None


# ---------------------------------------------------------------- processors


class Processor:
    """One KPRCB and, when Spindle has started it, the gdb thread (vCPU) running it."""

    def __init__(self, number, prcb):
        self.number = number
        self.prcb = prcb  # gdb.Value of KPRCB
        self.address = int(prcb.address)
        self.thread = None

    def field(self, name):
        return self.prcb[name]

    @property
    def apic_id(self):
        return int(self.prcb["ApicId"])

    def stack_range(self):
        base = int(self.prcb["KernelStackBase"])
        top = int(self.prcb["KernelStackTop"])
        return (base, top) if 0 < base < top else None


def processor_block():
    """(KiProcessorBlock value, element size, array length)."""
    block = lookup_static("KiProcessorBlock")
    if block is None:
        raise gdb.GdbError("no symbol KiProcessorBlock: is this Spindle's kernel.elf?")
    block_type = block.type.strip_typedefs()
    low, high = block_type.range()
    return block, block_type.target().sizeof, high - low + 1


def active_count():
    value = lookup_static("KiActiveProcessorCount")
    return int(value) if value is not None else 1


def prcb_number(address):
    """The processor number whose KPRCB is at address, or None."""
    block, size, length = processor_block()
    base = int(block.address)
    if address < base or address >= base + size * length or (address - base) % size:
        return None
    return (address - base) // size


def register(name, frame=None):
    frame = frame or gdb.newest_frame()
    return int(frame.read_register(name)) & 0xFFFFFFFFFFFFFFFF


class ThreadSelection:
    """Restores the selected thread and frame on exit."""

    def __enter__(self):
        self.thread = gdb.selected_thread()
        try:
            self.frame = gdb.selected_frame()
        except gdb.error:
            self.frame = None
        return self

    def __exit__(self, *exc):
        if self.thread is not None and self.thread.is_valid():
            self.thread.switch()
            if self.frame is not None and self.frame.is_valid():
                self.frame.select()
        return False


def threads():
    return sorted(inferior().threads(), key=lambda thread: thread.num)


def vcpu_state(thread):
    """Reads what spindle needs from one vCPU: {gs_base, rip, rsp, cr8}."""
    state = {}
    with ThreadSelection():
        thread.switch()
        frame = gdb.newest_frame()
        for name in ("gs_base", "rip", "rsp", "cr8"):
            try:
                state[name] = register(name, frame)
            except (gdb.error, ValueError):
                state[name] = None
    return state


def processors(with_threads=True):
    """
    Every processor Spindle knows of (numbers below KiActiveProcessorCount,
    plus any other vCPU whose GS base names a KPRCB), each with its vCPU's
    thread and register state when found.
    """
    block, _, length = processor_block()
    count = min(active_count(), length)
    result = {n: Processor(n, block[n]) for n in range(count)}
    unmatched = []
    if with_threads:
        for thread in threads():
            state = vcpu_state(thread)
            number = prcb_number(state["gs_base"]) if state["gs_base"] else None
            if number is None:
                unmatched.append((thread, state))
                continue
            if number not in result:
                result[number] = Processor(number, block[number])
            result[number].thread = thread
            result[number].state = state
    return [result[n] for n in sorted(result)], unmatched


def current_processor():
    """The selected thread's Processor, or None before its GS base is set."""
    gs_base = register("gs_base")
    number = prcb_number(gs_base) if gs_base else None
    if number is None:
        return None
    block, _, _ = processor_block()
    proc = Processor(number, block[number])
    proc.thread = gdb.selected_thread()
    proc.state = {"gs_base": gs_base, "rip": register("rip"), "rsp": register("rsp"),
                  "cr8": cr8_or_none()}
    return proc


def cr8_or_none():
    try:
        return register("cr8")
    except (gdb.error, ValueError):
        return None


CR8_MISSING = ("IRQL unknown: the gdb stub's target description has no cr8 register "
               "(QEMU's x86-64 description has had it since 2.x)")


def processor_by_number(number):
    procs, _ = processors()
    for proc in procs:
        if proc.number == number:
            return proc
    raise gdb.GdbError("no processor %d (KiActiveProcessorCount = %d)" % (number,
                                                                           active_count()))


def owner_of_stack(address, procs):
    """The processor whose kernel stack holds address, or None."""
    for proc in procs:
        span = proc.stack_range()
        if span and span[0] <= address < span[1]:
            return proc
    return None


# ---------------------------------------------------------------- the current test


def current_test():
    """'Suite:case' of the test the harness is running, '' between tests, None without it."""
    state = lookup_static("KtState")
    if state is None:
        return None
    try:
        current = state["Current"]
        if int(current) == 0:
            return ""
        return "%s:%s" % (current["Suite"].string(), current["Name"].string())
    except (gdb.error, gdb.MemoryError):
        return None


def test_on(proc, test):
    """The test proc is running the code of: the harness's KtAbortJump[proc] is set while
    it runs a test routine (the test itself on processor 0, a KtRunOnProcessors routine
    elsewhere)."""
    if not test:
        return "-"
    jumps = lookup_static("KtAbortJump")
    if jumps is None:
        return "?"
    try:
        return test if int(jumps[proc.number]) != 0 else "-"
    except (gdb.error, gdb.MemoryError):
        return "?"


# ---------------------------------------------------------------- lists


class ListWalk:
    """Walks a LIST_ENTRY ring from its head; entries exclude the head."""

    def __init__(self, head, limit=LIST_LIMIT):
        self.head = head
        self.entries = []
        self.error = None
        try:
            flink = u64(head)
            blink = u64(head + 8)
        except gdb.MemoryError:
            self.error = "head 0x%x is not readable" % head
            return
        if flink == 0 or blink == 0:
            self.error = "not initialized (Flink 0x%x, Blink 0x%x)" % (flink, blink)
            return
        previous = head
        entry = flink
        while entry != head:
            if len(self.entries) >= limit:
                self.error = "more than %d entries: a cycle that skips the head?" % limit
                return
            try:
                back = u64(entry + 8)
                forward = u64(entry)
            except gdb.MemoryError:
                self.error = "entry 0x%x (after 0x%x) is not readable" % (entry, previous)
                return
            if back != previous:
                self.error = ("entry 0x%x has Blink 0x%x, expected 0x%x (corrupt or being "
                              "changed)" % (entry, back, previous))
                return
            self.entries.append(entry)
            previous = entry
            entry = forward
        if blink != previous:
            self.error = "head Blink 0x%x, expected the last entry 0x%x" % (blink, previous)


def field_offset(gdb_type, path):
    """Byte offset and type of a dotted field path, looking into anonymous members."""
    total = 0
    current = gdb_type
    for name in path.split("."):
        found = _find_field(current.strip_typedefs(), name)
        if found is None:
            raise gdb.GdbError("%s has no field %s" % (gdb_type, path))
        delta, current = found
        total += delta
    return total, current


def _find_field(struct_type, name):
    for field in struct_type.fields():
        if field.name == name:
            return field.bitpos // 8, field.type
        if not field.name and field.type.strip_typedefs().code in (gdb.TYPE_CODE_STRUCT,
                                                                   gdb.TYPE_CODE_UNION):
            inner = _find_field(field.type.strip_typedefs(), name)
            if inner is not None:
                return field.bitpos // 8 + inner[0], inner[1]
    return None


class ListEntryPrinter:
    """LIST_ENTRY: the two links, and how many other entries share its ring."""

    def __init__(self, value):
        self.value = value

    def to_string(self):
        flink = int(self.value["Flink"])
        blink = int(self.value["Blink"])
        text = "{Flink = 0x%x, Blink = 0x%x}" % (flink, blink)
        if self.value.address is None:
            return text
        here = int(self.value.address)
        if flink == 0 and blink == 0:
            return text + " (not initialized)"
        if flink == here and blink == here:
            return text + " (empty)"
        walk = ListWalk(here, limit=10000)
        if walk.error:
            return text + " (ring broken: %s)" % walk.error
        return text + " (ring of %d other entr%s)" % (len(walk.entries),
                                                       "y" if len(walk.entries) == 1 else "ies")


def build_pretty_printers():
    printers = gdb.printing.RegexpCollectionPrettyPrinter("spindle")
    printers.add_printer("LIST_ENTRY", "^_LIST_ENTRY$", ListEntryPrinter)
    return printers


# ---------------------------------------------------------------- locks


def lock_track_lines(lock):
    """
    What the checked build's per-processor lock table (KiLockTrack in
    kernel/ke/spinlock.c) says about lock: who owns or waits for it, and the
    acquire's call site. [] in a free build, which keeps no table.
    """
    table = lookup_static("KiLockTrack")
    if table is None:
        return []
    try:
        row_type = table.type.strip_typedefs().target()
        slot_type = row_type.strip_typedefs().target()
        slots = row_type.sizeof // slot_type.sizeof
        fields = {field.name: field.bitpos // 8 for field in slot_type.strip_typedefs().fields()}
        rows = min(active_count(), table.type.sizeof // row_type.sizeof)
        data = read(int(table.address), rows * row_type.sizeof)
    except (gdb.error, gdb.MemoryError, KeyError):
        return []
    lines = []
    for number in range(rows):
        for index in range(slots):
            at = number * row_type.sizeof + index * slot_type.sizeof
            if int.from_bytes(data[at + fields["Lock"]:at + fields["Lock"] + 8], "little") != lock:
                continue
            rip = int.from_bytes(data[at + fields["Rip"]:at + fields["Rip"] + 8], "little")
            owner = data[at + fields["Owner"]] != 0
            lines.append("  lock table: processor %d %s, acquire called from %s" % (
                number, "owns it" if owner else "waits for it (queued)", pointer(rip)))
    return lines


def describe_lock(address, procs=None):
    """Lines describing the KSPIN_LOCK at address (ordinary or in-stack queued)."""
    lines = describe_lock_word(address, procs)
    if u64(address) != 0:
        lines.extend(lock_track_lines(address))
    return lines


def describe_lock_word(address, procs=None):
    word = u64(address)
    name = symbol(address)
    lines = ["KSPIN_LOCK 0x%x%s: word 0x%x" % (address, " <%s>" % name if name else "", word)]
    if word == 0:
        lines.append("  free")
        return lines
    if word & 1:
        owner = prcb_number(word & ~1)
        if owner is not None:
            lines.append("  ordinary spin lock, held by processor %d (checked build: word = "
                         "KPRCB 0x%x | 1)" % (owner, word & ~1))
        elif word == 1:
            lines.append("  ordinary spin lock, held (word 1: a free build records no owner)")
        else:
            lines.append("  ordinary spin lock, held; the word is neither 1 nor a KPRCB | 1")
        return lines
    if word & 7:
        lines.append("  held, but the word fits neither encoding (ordinary: 1 or KPRCB|1; "
                     "queued: an 8-byte-aligned KSPIN_LOCK_QUEUE address)")
        return lines
    lines.extend(describe_queued_lock(address, word, procs))
    return lines


def queue_entry(entry):
    return u64(entry + offset("KSPIN_LOCK_QUEUE", "Next")), \
        u64(entry + offset("KSPIN_LOCK_QUEUE", "Lock"))


def flags_text(lock_field):
    flags = [name for bit, name in ((LOCK_QUEUE_OWNER, "OWNER"), (LOCK_QUEUE_WAIT, "WAIT"))
             if lock_field & bit]
    return "|".join(flags) if flags else "no flags"


def scan_stacks_for_entries(lock, procs):
    """
    Live KSPIN_LOCK_QUEUE entries naming lock on every processor's kernel
    stack, from its stack pointer up (frames below it are dead). An entry is
    live while its Lock field carries WAIT or OWNER; a released handle holds
    the bare lock address. Returns {entry address: processor number}.
    """
    found = {}
    for proc in procs:
        span = proc.stack_range()
        if not span:
            continue
        low, high = span
        rsp = getattr(proc, "state", {}).get("rsp") if proc.thread else None
        if rsp is not None and low <= rsp < high:
            low = rsp & ~7
        try:
            data = read(low, high - low)
        except gdb.MemoryError:
            continue
        for at in range(0, len(data) - 15, 8):
            lock_field = int.from_bytes(data[at + 8:at + 16], "little")
            if lock_field & ~3 == lock and lock_field & 3:
                found[low + at] = proc.number
    return found


def describe_queued_lock(lock, tail, procs):
    if procs is None:
        procs, _ = processors()
    lines = []
    where = owner_of_stack(tail, procs)
    lines.append("  in-stack queued spin lock, held; the word is the tail (last waiter): "
                 "KSPIN_LOCK_QUEUE 0x%x%s" % (tail, " on processor %d's stack" % where.number
                                              if where else ""))
    try:
        tail_next, tail_lock = queue_entry(tail)
    except gdb.MemoryError:
        lines.append("  the tail entry is not readable")
        return lines
    if tail_lock & ~3 != lock:
        lines.append("  warning: the tail's Lock field 0x%x does not name this lock" % tail_lock)
    found = scan_stacks_for_entries(lock, procs)
    found.setdefault(tail, where.number if where else None)
    owners = [entry for entry in found if queue_entry(entry)[1] & LOCK_QUEUE_OWNER]
    lines.append("  MCS links run forward only (owner -> ... -> tail); entries found by "
                 "scanning each processor's live stack:")
    chain = []
    if len(owners) == 1:
        entry = owners[0]
        while entry and len(chain) < 256 and entry not in chain:
            chain.append(entry)
            if entry not in found:
                found[entry] = getattr(owner_of_stack(entry, procs), "number", None)
            entry = queue_entry(entry)[0]
    for index, entry in enumerate(chain):
        next_entry, lock_field = queue_entry(entry)
        role = "owner " if index == 0 else "waiter"
        cpu = found.get(entry)
        lines.append("    %s KSPIN_LOCK_QUEUE 0x%x  processor %s  %s  Next %s%s" % (
            role, entry, cpu if cpu is not None else "?", flags_text(lock_field),
            "0x%x" % next_entry if next_entry else "NULL", "  <- tail" if entry == tail else ""))
    if not chain:
        lines.append("    no owner entry found (its handle is not on a processor's stack); "
                     "known: the tail above")
    elif chain[-1] != tail:
        lines.append("    the chain ends before the tail: a waiter has swapped itself in but "
                     "not yet linked behind its predecessor")
    for entry in sorted(set(found) - set(chain)):
        next_entry, lock_field = queue_entry(entry)
        lines.append("    unlinked KSPIN_LOCK_QUEUE 0x%x  processor %s  %s  Next %s%s" % (
            entry, found[entry] if found[entry] is not None else "?", flags_text(lock_field),
            "0x%x" % next_entry if next_entry else "NULL", "  <- tail" if entry == tail else ""))
    return lines


# ---------------------------------------------------------------- DPCs, device queues, IRPs


def dpc_line(dpc):
    routine = u64(dpc + offset("KDPC", "DeferredRoutine"))
    dpc_type = u8(dpc + offset("KDPC", "Type"))
    kind = {DPC_OBJECT: "", THREADED_DPC_OBJECT: " threaded"}.get(dpc_type,
                                                                  " (Type %d?)" % dpc_type)
    return "KDPC 0x%x%s %s  context 0x%x  args 0x%x, 0x%x  %s importance" % (
        dpc, kind, pointer(routine), u64(dpc + offset("KDPC", "DeferredContext")),
        u64(dpc + offset("KDPC", "SystemArgument1")), u64(dpc + offset("KDPC", "SystemArgument2")),
        IMPORTANCE.get(u8(dpc + offset("KDPC", "Importance")), "?"))


def dpc_queue_lines(proc):
    lines = []
    names = ("normal", "threaded")
    for index in range(len(names)):
        data = proc.field("DpcData")[index]
        head = int(data["DpcListHead"].address)
        depth = int(data["DpcQueueDepth"])
        walk = ListWalk(head)
        if index == 1 and depth == 0 and not walk.entries and not walk.error:
            continue
        lock = int(data["DpcLock"])
        lines.append("processor %d %s DPC queue: depth %d, %d run so far, DpcLock %s%s" % (
            proc.number, names[index], depth, int(data["DpcCount"]),
            "free" if lock == 0 else "held (0x%x)" % lock,
            ", routine active" if index == 0 and int(proc.field("DpcRoutineActive")) else ""))
        for position, entry in enumerate(walk.entries):
            lines.append("  %2d. %s" % (position + 1, dpc_line(entry - offset("KDPC",
                                                                               "DpcListEntry"))))
        if walk.error:
            lines.append("  list walk stopped: %s" % walk.error)
        elif len(walk.entries) != depth and lock == 0:
            lines.append("  warning: %d entries linked, DpcQueueDepth says %d" % (
                len(walk.entries), depth))
    return lines


def irp_at_queue_entry(entry):
    """The IRP whose Tail.Overlay.DeviceQueueEntry is entry, or None."""
    irp = entry - offset("IRP", "Tail.Overlay.DeviceQueueEntry")
    try:
        return irp if s16(irp) == IO_TYPE_IRP and u16(irp + 2) >= SIZES["IRP"] else None
    except gdb.MemoryError:
        return None


def status_text(status):
    name = STATUS_NAMES.get(status & 0xFFFFFFFF)
    return "0x%08x%s" % (status & 0xFFFFFFFF, " " + name if name else "")


def irp_lines(irp):
    irp_type = s16(irp + offset("IRP", "Type"))
    size = u16(irp + offset("IRP", "Size"))
    lines = ["IRP 0x%x: Type %d%s, Size 0x%x" % (irp, irp_type, " (IO_TYPE_IRP)" if irp_type ==
                                                 IO_TYPE_IRP else " -- not an IRP (expected 6)",
                                                 size)]
    status = u32(irp + offset("IRP", "IoStatus.Status"))
    lines.append("  IoStatus.Status %s, Information 0x%x" % (
        status_text(status), u64(irp + offset("IRP", "IoStatus.Information"))))
    cancel = u8(irp + offset("IRP", "Cancel"))
    lines.append("  Cancel %s, CancelIrql %d, CancelRoutine %s" % (
        "TRUE" if cancel else "FALSE", u8(irp + offset("IRP", "CancelIrql")),
        pointer(u64(irp + offset("IRP", "CancelRoutine")))))
    count = s8(irp + offset("IRP", "StackCount"))
    location = s8(irp + offset("IRP", "CurrentLocation"))
    current = u64(irp + offset("IRP", "Tail.Overlay.CurrentStackLocation"))
    first = irp + SIZES["IRP"]
    if 1 <= location <= count:
        where = "stack location %d of %d is current" % (location, count)
    elif location == count + 1:
        where = "no current stack location: not yet passed to a driver"
    else:
        where = "out of range"
    lines.append("  StackCount %d, CurrentLocation %d (%s), CurrentStackLocation 0x%x" % (
        count, location, where, current))
    expected = first + (location - 1) * SIZES["IO_STACK_LOCATION"]
    if current != expected and 0 <= location <= count + 1:
        lines.append("  warning: CurrentStackLocation should be 0x%x for CurrentLocation %d" %
                     (expected, location))
    lines.append("  PendingReturned %s, Flags 0x%x, AssociatedIrp 0x%x, UserEvent 0x%x" % (
        "TRUE" if u8(irp + offset("IRP", "PendingReturned")) else "FALSE",
        u32(irp + offset("IRP", "Flags")), u64(irp + offset("IRP", "AssociatedIrp")),
        u64(irp + offset("IRP", "UserEvent"))))
    for index in range(max(0, min(count, 32)), 0, -1):
        stack = first + (index - 1) * SIZES["IO_STACK_LOCATION"]
        major = u8(stack + offset("IO_STACK_LOCATION", "MajorFunction"))
        lines.append("  %s %d: 0x%x %s minor 0x%x control 0x%02x device 0x%x completion %s "
                     "context 0x%x" % (
                         ">" if index == location else " ", index, stack,
                         IRP_MJ_NAMES.get(major, "IRP_MJ 0x%x" % major),
                         u8(stack + offset("IO_STACK_LOCATION", "MinorFunction")),
                         u8(stack + offset("IO_STACK_LOCATION", "Control")),
                         u64(stack + offset("IO_STACK_LOCATION", "DeviceObject")),
                         pointer(u64(stack + offset("IO_STACK_LOCATION", "CompletionRoutine"))),
                         u64(stack + offset("IO_STACK_LOCATION", "Context"))))
    return lines


def devq_lines(queue):
    queue_type = s16(queue + offset("KDEVICE_QUEUE", "Type"))
    lines = ["KDEVICE_QUEUE 0x%x%s: Type %d%s, Size %d, Busy %s" % (
        queue, " <%s>" % symbol(queue) if symbol(queue) else "", queue_type,
        " (DeviceQueueObject)" if queue_type == DEVICE_QUEUE_OBJECT else " -- expected 20",
        s16(queue + offset("KDEVICE_QUEUE", "Size")),
        "TRUE" if u8(queue + offset("KDEVICE_QUEUE", "Busy")) else "FALSE")]
    lock_lines = describe_lock(queue + offset("KDEVICE_QUEUE", "Lock"))
    lines.append("  Lock: " + lock_lines[1].strip())
    lines.extend("  " + line for line in lock_lines[2:])
    walk = ListWalk(queue + offset("KDEVICE_QUEUE", "DeviceListHead"))
    lines.append("  %d entr%s in queue order:" % (len(walk.entries),
                                                  "y" if len(walk.entries) == 1 else "ies"))
    for position, entry in enumerate(walk.entries):
        irp = irp_at_queue_entry(entry)
        lines.append("  %3d. KDEVICE_QUEUE_ENTRY 0x%x SortKey %u Inserted %s%s" % (
            position + 1, entry, u32(entry + offset("KDEVICE_QUEUE_ENTRY", "SortKey")),
            "TRUE" if u8(entry + offset("KDEVICE_QUEUE_ENTRY", "Inserted")) else "FALSE",
            "  in IRP 0x%x (Cancel %s)" % (irp, "TRUE" if u8(irp + offset("IRP", "Cancel"))
                                           else "FALSE") if irp else ""))
    if walk.error:
        lines.append("  list walk stopped: %s" % walk.error)
    if u8(queue + offset("KDEVICE_QUEUE", "Busy")) == 0 and walk.entries:
        lines.append("  warning: entries queued while the queue is not Busy")
    return lines


# ---------------------------------------------------------------- commands


def target_alive():
    """True while gdb is attached to a live target (QEMU's stub) with at least one vCPU."""
    inf = inferior()
    try:
        return inf.pid != 0 and len(inf.threads()) > 0
    except gdb.error:
        return False


NO_TARGET = ("no live target: QEMU has exited or gdb is not attached, and the kernel's "
             "memory is no longer there to read (gdb would show the ELF file's initial "
             "data instead); start `make debug` and run `spindle-attach`")


def readable_errors(invoke):
    """
    A command's invoke that refuses to run without a live target (rather than show
    the ELF file's stale contents) and reports unreadable memory as one clean line.
    """

    def wrapper(self, argument, from_tty):
        if getattr(self, "_needs_target", True) and not target_alive():
            raise gdb.GdbError("%s: %s" % (self._command, NO_TARGET))
        try:
            return invoke(self, argument, from_tty)
        except gdb.MemoryError as error:
            raise gdb.GdbError("%s: %s" % (self._command, error))

    return wrapper


def parse_cpu(argument):
    try:
        return int(gdb.parse_and_eval(argument))
    except gdb.error as error:
        raise gdb.GdbError("bad processor number '%s': %s" % (argument, error))


class SpindleCommand(gdb.Command):
    """Spindle's kernel-aware commands (scripts/gdb/spindle.py):

spindle-cpus               every processor: number, APIC ID, gdb thread, IRQL (CR8),
                           DPC queue depth, RIP, the test it is running
spindle-cpu N              select the gdb thread (vCPU) running processor N
spindle-irql [N]           IRQL of the selected vCPU (or of processor N), from CR8
spindle-lock ADDR          a KSPIN_LOCK: free or held, owner (checked build), queued waiters
spindle-dpcs [N]           the DPC queue of every processor (or of processor N)
spindle-devq ADDR          a KDEVICE_QUEUE: Busy, lock, entries (and their IRPs)
spindle-irp ADDR           an IRP: status, cancel flag and routine, stack locations
spindle-list ADDR [TYPE FIELD] [-p]
                           the entries of a LIST_ENTRY ring, as TYPE records via FIELD
spindle-pte ADDR           how ADDR is mapped: each page-table level, rights, frame
spindle-locks              every lock held or awaited on every processor, with the
                           acquire's call site (the checked build's lock table)
spindle-log [N]            the last N lines (default 40) of the kernel's output, from its
                           in-memory log ring (also after the serial console is gone)
spindle-stop               the last bug check: code, name, parameters, the raising
                           processor's registers and stack, every other processor's RIP
spindle-timers             the timer list: due tick, period, DPC routine, processor
spindle-pool               pool usage per tag (outstanding allocations and bytes)
spindle-prcb N             processor N's KPRCB, field by field
spindle-devobj ADDR        a DEVICE_OBJECT: driver, flags, StartIo queue, current IRP
spindle-drvobj ADDR        a DRIVER_OBJECT: its devices, StartIo, Unload, dispatch table
bt                         unwinds through interrupt and exception frames: the frame
                           after isr_common is the interrupted code (arch/x86_64/isr.asm)
$spindle_cpu()             convenience function: the selected vCPU's processor number
                           (break Routine if $spindle_cpu() == 3)
print of a LIST_ENTRY       shows how many entries share its ring (print/r: raw)"""

    def __init__(self):
        self._command = "spindle"
        self._needs_target = False
        super().__init__("spindle", gdb.COMMAND_USER)

    @readable_errors
    def invoke(self, argument, from_tty):
        print(self.__doc__)


class CpusCommand(gdb.Command):
    """List every processor: number, APIC ID, gdb thread (vCPU), IRQL read from that
vCPU's CR8, DPC queue depth, where it is, and the test whose code it runs.
Usage: spindle-cpus"""

    def __init__(self):
        self._command = "spindle-cpus"
        super().__init__("spindle-cpus", gdb.COMMAND_STATUS)

    @readable_errors
    def invoke(self, argument, from_tty):
        procs, unmatched = processors()
        test = current_test()
        print("%d processor(s) active (KiActiveProcessorCount), %d vCPU thread(s); current "
              "test: %s" % (active_count(), len(threads()),
                            test if test else ("none" if test == "" else "unknown")))
        print("%3s %4s %6s %-18s %4s %-40s %s" % ("CPU", "APIC", "thread", "IRQL", "DPCs",
                                                  "RIP", "test"))
        missing_cr8 = False
        for proc in procs:
            depth = int(proc.field("DpcData")[0]["DpcQueueDepth"])
            if proc.thread is None:
                print("%3d %4d %6s %-18s %4d %-40s %s" % (proc.number, proc.apic_id, "-",
                                                          "-", depth, "(no vCPU has this GS "
                                                          "base yet)", "-"))
                continue
            cr8 = proc.state["cr8"]
            if cr8 is None:
                missing_cr8 = True
                irql = "unknown"
            else:
                irql = "%d %s" % (cr8, irql_name(cr8))
            rip = proc.state["rip"]
            where = symbol(rip) if rip is not None else "?"
            print("%3d %4d %6d %-18s %4d %-40s %s" % (
                proc.number, proc.apic_id, proc.thread.num, irql, depth,
                where[:40] if where else "0x%x" % rip, test_on(proc, test)))
        for thread, state in unmatched:
            print("  thread %d: not started by Spindle (GS base 0x%x, RIP 0x%x)" % (
                thread.num, state["gs_base"] or 0, state["rip"] or 0))
        if missing_cr8:
            print("  " + CR8_MISSING)


class CpuCommand(gdb.Command):
    """Select the gdb thread (vCPU) running processor N.
Usage: spindle-cpu N"""

    def __init__(self):
        self._command = "spindle-cpu"
        super().__init__("spindle-cpu", gdb.COMMAND_RUNNING)

    @readable_errors
    def invoke(self, argument, from_tty):
        proc = processor_by_number(parse_cpu(argument))
        if proc.thread is None:
            raise gdb.GdbError("processor %d has no vCPU thread yet" % proc.number)
        gdb.execute("thread %d" % proc.thread.num, from_tty)


class IrqlCommand(gdb.Command):
    """Show the IRQL (CR8) of the selected vCPU, or of processor N.
Usage: spindle-irql [N]"""

    def __init__(self):
        self._command = "spindle-irql"
        super().__init__("spindle-irql", gdb.COMMAND_STATUS)

    @readable_errors
    def invoke(self, argument, from_tty):
        if argument.strip():
            proc = processor_by_number(parse_cpu(argument))
            if proc.thread is None:
                raise gdb.GdbError("processor %d has no vCPU thread yet" % proc.number)
            cr8 = proc.state["cr8"]
            who = "processor %d (thread %d)" % (proc.number, proc.thread.num)
        else:
            cr8 = cr8_or_none()
            proc = current_processor()
            who = "thread %d%s" % (gdb.selected_thread().num,
                                   ", processor %d" % proc.number if proc else
                                   " (GS base not set: not started by Spindle yet)")
        if cr8 is None:
            print("%s: %s" % (who, CR8_MISSING))
        else:
            print("%s: IRQL %d %s (CR8 = 0x%x)" % (who, cr8, irql_name(cr8), cr8))


class LockCommand(gdb.Command):
    """Describe the KSPIN_LOCK at ADDR.
Ordinary lock: free or held; in a checked build (DBG=1) the owner processor,
decoded from the word (KPRCB address | 1); a free build stores 1 (no owner).
In-stack queued lock: the word is the tail KSPIN_LOCK_QUEUE (the last waiter).
MCS links only run forward from the owner, so the owner and waiters are found
by scanning each processor's live kernel stack for entries naming the lock
(Lock field = ADDR | OWNER or WAIT), then following Next from the owner.
Usage: spindle-lock ADDR     (ADDR: &MyLock, MyLock, 0xffff..., Ext->Lock)"""

    def __init__(self):
        self._command = "spindle-lock"
        super().__init__("spindle-lock", gdb.COMMAND_DATA, gdb.COMPLETE_EXPRESSION)

    @readable_errors
    def invoke(self, argument, from_tty):
        address = address_of(argument, ("KSPIN_LOCK",))
        for line in describe_lock(address):
            print(line)


class DpcsCommand(gdb.Command):
    """Show the DPC queue of every processor, or of processor N: depth, DPCs run,
the queue lock and each queued KDPC (routine with symbol, context, arguments).
Usage: spindle-dpcs [N]"""

    def __init__(self):
        self._command = "spindle-dpcs"
        super().__init__("spindle-dpcs", gdb.COMMAND_STATUS)

    @readable_errors
    def invoke(self, argument, from_tty):
        procs, _ = processors(with_threads=False)
        if argument.strip():
            number = parse_cpu(argument)
            procs = [proc for proc in procs if proc.number == number]
            if not procs:
                raise gdb.GdbError("no processor %d" % number)
        for proc in procs:
            for line in dpc_queue_lines(proc):
                print(line)


class DevqCommand(gdb.Command):
    """Describe the KDEVICE_QUEUE at ADDR: Busy, its lock, the queued entries in
order with SortKey, and the IRP each entry belongs to.
Usage: spindle-devq ADDR     (ADDR: &Device->DeviceQueue, a KDEVICE_QUEUE lvalue)"""

    def __init__(self):
        self._command = "spindle-devq"
        super().__init__("spindle-devq", gdb.COMMAND_DATA, gdb.COMPLETE_EXPRESSION)

    @readable_errors
    def invoke(self, argument, from_tty):
        for line in devq_lines(address_of(argument, ("KDEVICE_QUEUE",))):
            print(line)


class IrpCommand(gdb.Command):
    """Describe the IRP at ADDR: IoStatus, Cancel and CancelRoutine (with symbol),
CurrentLocation/StackCount and every stack location (> marks the current one).
Usage: spindle-irp ADDR"""

    def __init__(self):
        self._command = "spindle-irp"
        super().__init__("spindle-irp", gdb.COMMAND_DATA, gdb.COMPLETE_EXPRESSION)

    @readable_errors
    def invoke(self, argument, from_tty):
        for line in irp_lines(address_of(argument, ("IRP",))):
            print(line)


class ListCommand(gdb.Command):
    """Walk the LIST_ENTRY ring whose head is at ADDR, checking every Blink.
With TYPE and FIELD, show each entry's containing record (CONTAINING_RECORD);
FIELD may be a dotted path (Tail.Overlay.ListEntry). -p prints each record.
Usage: spindle-list ADDR [TYPE FIELD] [-p]
   e.g. spindle-list &KiProcessorBlock[0].DpcData[0].DpcListHead KDPC DpcListEntry"""

    def __init__(self):
        self._command = "spindle-list"
        super().__init__("spindle-list", gdb.COMMAND_DATA, gdb.COMPLETE_EXPRESSION)

    @readable_errors
    def invoke(self, argument, from_tty):
        words = gdb.string_to_argv(argument)
        show = "-p" in words
        words = [word for word in words if word != "-p"]
        if len(words) not in (1, 3):
            raise gdb.GdbError("usage: spindle-list ADDR [TYPE FIELD] [-p]")
        head = address_of(words[0], ("LIST_ENTRY",))
        record_type = None
        delta = 0
        if len(words) == 3:
            record_type = lookup_type(words[1])
            if record_type is None:
                raise gdb.GdbError("no type %s in the debug information" % words[1])
            delta, _ = field_offset(record_type, words[2])
        walk = ListWalk(head)
        print("LIST_ENTRY head 0x%x%s: %d entr%s" % (
            head, " <%s>" % symbol(head) if symbol(head) else "", len(walk.entries),
            "y" if len(walk.entries) == 1 else "ies"))
        for index, entry in enumerate(walk.entries):
            if record_type is None:
                print("  [%d] 0x%x" % (index, entry))
                continue
            record = entry - delta
            print("  [%d] 0x%x -> (%s *) 0x%x" % (index, entry, record_type, record))
            if show:
                value = gdb.Value(record).cast(record_type.pointer()).dereference()
                print("      " + str(value).replace("\n", "\n      "))
        if walk.error:
            print("  walk stopped: %s" % walk.error)


class CpuFunction(gdb.Function):
    """$spindle_cpu(): the selected vCPU's processor number (-1 before Spindle set its
GS base). For a breakpoint on one processor: break Routine if $spindle_cpu() == 3"""

    def __init__(self):
        super().__init__("spindle_cpu")

    def invoke(self):
        gs_base = register("gs_base")
        number = prcb_number(gs_base) if gs_base else None
        return -1 if number is None else number


def connect(port):
    """`target remote :port`, with a hint when nothing listens there."""
    try:
        gdb.execute("target remote :%d" % port)
    except gdb.error as error:
        raise gdb.GdbError("%s\nspindle: nothing on :%d -- start the kernel with `make debug` "
                           "(same GDB_PORT) in another terminal first" % (error, port))


class AttachCommand(gdb.Command):
    """Connect to QEMU's gdb stub (`make debug`) on localhost:PORT (default
$spindle_gdb_port, else 1234).
Usage: spindle-attach [PORT]"""

    def __init__(self):
        self._command = "spindle-attach"
        self._needs_target = False
        super().__init__("spindle-attach", gdb.COMMAND_RUNNING)

    @readable_errors
    def invoke(self, argument, from_tty):
        if argument.strip():
            port = int(gdb.parse_and_eval(argument))
        else:
            value = gdb.convenience_variable("spindle_gdb_port")
            port = int(value) if value is not None else 1234
        connect(port)


# ---------------------------------------------------------------- unwinding through traps

# struct x86_trap_frame (arch/x86_64/isr.asm, x86.h): isr_common pushes rax..r15, so at the
# `call KiTrapDispatch` RSP points at r15; then the vector, the error code and what the CPU
# pushed (RIP, CS, RFLAGS, RSP, SS). 176 bytes.
TRAP_FRAME_GPRS = ("r15", "r14", "r13", "r12", "r11", "r10", "r9", "r8", "rbp", "rdi", "rsi",
                   "rdx", "rcx", "rbx", "rax")
TRAP_FRAME = {"vector": 120, "error": 128, "rip": 136, "cs": 144, "eflags": 152, "rsp": 160,
              "ss": 168}
TRAP_FRAME_SIZE = 176


class _FrameId:
    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


def trap_return_address():
    """The address after `call KiTrapDispatch` in isr_common (None when not found)."""
    try:
        start = int(gdb.parse_and_eval("(unsigned long)&isr_common"))
        arch = gdb.selected_inferior().architecture()
    except (gdb.error, RuntimeError):
        return None, None
    try:
        for insn in arch.disassemble(start, start + 96):
            if insn["asm"].startswith("call") and "KiTrapDispatch" in insn["asm"]:
                return start, insn["addr"] + insn["length"]
    except gdb.MemoryError:
        pass
    return start, None


def function_start(pc):
    """The start address of the function (or assembly label) holding pc, or None."""
    try:
        text = gdb.execute("info symbol 0x%x" % pc, to_string=True)
    except gdb.error:
        return None
    match = re.match(r"\S+(?: \+ (\d+))? in section", text)
    if not match:
        return None
    return pc - int(match.group(1) or 0)


def interrupted_frame_layout(pc):
    """
    The stack layout of the function holding pc when an interrupt or exception
    stopped it right before the instruction at pc: (depth, fp, rbp_slot), where
    depth is the bytes pushed below the return address, fp the depth at which
    `mov %rsp,%rbp` ran (None: RBP is not this function's frame pointer) and
    rbp_slot the depth of the saved caller RBP (None: RBP not saved). Found by
    reading the function's code from its start; after a `ret` or `jmp` the scan
    goes back to the body's state. None when it cannot tell.

    gdb's own unwinder would read the DWARF row of pc - 1, as for a return
    address: wrong when pc is a function's first instruction (a leaf faulting
    at once) or follows a push, pop or stack adjustment.
    """
    start = function_start(pc)
    if start is None or pc - start > 0x4000:
        return None
    depth, fp, rbp_slot = 0, None, None
    body = None
    epilogue = False
    if pc > start:
        arch = gdb.selected_inferior().architecture()
        insns = arch.disassemble(start, pc - 1)
        if not insns or insns[-1]["addr"] + insns[-1]["length"] != pc:
            return None
        for insn in insns:
            asm = re.sub(r"\s+", " ", insn["asm"]).strip()
            asm = re.sub(r" *#.*$", "", asm)
            sub = re.match(r"sub \$0x([0-9a-f]+),%rsp$", asm)
            add = re.match(r"add \$0x([0-9a-f]+),%rsp$", asm)
            lea = re.match(r"lea -0x([0-9a-f]+)\(%rbp\),%rsp$", asm)
            if asm == "push %rbp":
                depth += 8
                rbp_slot = depth
            elif asm.startswith("push"):
                depth += 8
            elif asm == "mov %rsp,%rbp":
                fp = depth
            elif sub:
                depth += int(sub.group(1), 16)
            elif add:
                depth -= int(add.group(1), 16)
                epilogue = True
            elif lea and fp is not None:
                depth = fp + int(lea.group(1), 16)
                epilogue = True
            elif asm == "pop %rbp":
                depth -= 8
                fp = rbp_slot = None
                epilogue = True
            elif asm.startswith("pop"):
                depth -= 8
                epilogue = True
            elif asm.startswith("leave"):
                if fp is None:
                    return None
                depth = fp - 8
                fp = rbp_slot = None
                epilogue = True
            elif asm.startswith("ret") or asm.startswith("jmp "):
                if body is not None:
                    depth, fp, rbp_slot = body
                epilogue = False
                continue
            if not epilogue:
                body = (depth, fp, rbp_slot)
            if depth < 0:
                return None
    return depth, fp, rbp_slot


class TrapFrameUnwinder(gdb.unwinder.Unwinder):
    """
    Unwinds isr_common's frame: the caller of an interrupt or exception is the
    interrupted code, whose registers are all in the trap frame on the stack.
    Then unwinds that interrupted frame itself from its exact RIP (not a return
    address), with interrupted_frame_layout.
    """

    def __init__(self):
        super().__init__("spindle-trap-frame")
        self.cache = None
        self.interrupted = {}  # (rip, rsp) of frames a trap frame restored

    def __call__(self, pending_frame):
        if self.cache is None:
            found = trap_return_address()
            if found[1] is None:
                return None  # not loaded yet (gdb attaches before GRUB loads the kernel)
            self.cache = found
        start, return_address = self.cache
        pc = int(pending_frame.read_register("rip")) & 0xFFFFFFFFFFFFFFFF
        sp = int(pending_frame.read_register("rsp")) & 0xFFFFFFFFFFFFFFFF
        if (pc, sp) in self.interrupted:
            return self.unwind_interrupted(pending_frame, pc, sp)
        if pc != return_address:
            return None
        try:
            data = read(sp, TRAP_FRAME_SIZE)
        except gdb.MemoryError:
            return None

        def at(offset):
            return int.from_bytes(data[offset:offset + 8], "little")

        u64_type = gdb.lookup_type("unsigned long")
        info = pending_frame.create_unwind_info(_FrameId(gdb.Value(sp).cast(u64_type),
                                                         gdb.Value(start).cast(u64_type)))
        for index, name in enumerate(TRAP_FRAME_GPRS):
            info.add_saved_register(name, gdb.Value(at(index * 8)).cast(u64_type))
        u32_type = gdb.lookup_type("unsigned int")  # gdb's eflags, cs and ss are 32-bit
        for name in ("rip", "rsp"):
            info.add_saved_register(name, gdb.Value(at(TRAP_FRAME[name])).cast(u64_type))
        for name in ("eflags", "cs", "ss"):
            info.add_saved_register(name, gdb.Value(at(TRAP_FRAME[name]) & 0xFFFFFFFF)
                                    .cast(u32_type))
        if len(self.interrupted) > 4096:
            self.interrupted.clear()
        self.interrupted[(at(TRAP_FRAME["rip"]), at(TRAP_FRAME["rsp"]))] = True
        return info

    def unwind_interrupted(self, pending_frame, pc, sp):
        try:
            layout = interrupted_frame_layout(pc)
        except (gdb.error, gdb.MemoryError):
            layout = None
        if layout is None:
            return None  # gdb's DWARF unwinder, from pc - 1
        depth, fp, rbp_slot = layout
        rbp = int(pending_frame.read_register("rbp")) & 0xFFFFFFFFFFFFFFFF
        cfa = rbp + fp + 8 if fp is not None else sp + depth + 8
        try:
            caller_rip = u64(cfa - 8)
            caller_rbp = u64(cfa - 8 - rbp_slot) if rbp_slot is not None else rbp
        except gdb.MemoryError:
            return None
        u64_type = gdb.lookup_type("unsigned long")
        start = function_start(pc) or pc
        info = pending_frame.create_unwind_info(_FrameId(gdb.Value(cfa).cast(u64_type),
                                                         gdb.Value(start).cast(u64_type)))
        info.add_saved_register("rip", gdb.Value(caller_rip).cast(u64_type))
        info.add_saved_register("rsp", gdb.Value(cfa).cast(u64_type))
        info.add_saved_register("rbp", gdb.Value(caller_rbp).cast(u64_type))
        return info


class UnknownFrameDecorator(gdb.FrameDecorator.FrameDecorator):
    """A frame no symbol covers: `??`, as bt prints it without frame filters."""

    def function(self):
        return "??"


class TrapFrameDecorator(gdb.FrameDecorator.FrameDecorator):
    """
    An interrupted frame stopped at a function's first instruction: named and
    placed by its exact RIP (gdb looks up RIP - 1, as for a return address, which
    lies in the function before).
    """

    def function(self):
        pc = self.inferior_frame().pc()
        name = symbol(pc)
        return name.split("+")[0] if name else super().function()

    def filename(self):
        sal = gdb.find_pc_line(self.inferior_frame().pc())
        return sal.symtab.filename if sal.symtab else super().filename()

    def line(self):
        sal = gdb.find_pc_line(self.inferior_frame().pc())
        return sal.line if sal.symtab else super().line()


class TrapFrameFilter:
    """bt: the frame below isr_common is an interrupted one (see TrapFrameDecorator)."""

    def __init__(self):
        self.name = "spindle-trap-frames"
        self.priority = 100
        self.enabled = True

    def filter(self, frames):
        below_trap = False
        for frame in frames:
            inferior_frame = frame.inferior_frame()
            decorated = frame
            try:
                pc = inferior_frame.pc()
                if below_trap and function_start(pc) == pc:
                    decorated = TrapFrameDecorator(frame)
                elif inferior_frame.function() is None and not symbol(pc):
                    decorated = UnknownFrameDecorator(frame)
                below_trap = inferior_frame.name() == "isr_common"
            except gdb.error:
                below_trap = False
            yield decorated


def register_unwinder():
    """Registers the trap-frame unwinder and bt's frame filter for the kernel's objfile."""
    gdb.unwinder.register_unwinder(gdb.current_objfile(), TrapFrameUnwinder(), replace=True)
    trap_filter = TrapFrameFilter()
    objfile = gdb.current_objfile()
    (objfile.frame_filters if objfile is not None else gdb.frame_filters)[trap_filter.name] = \
        trap_filter


# ---------------------------------------------------------------- lock table, log, stop


def lock_table():
    """[(processor, lock, rip, owner)] from the checked build's KiLockTrack, or None."""
    table = lookup_static("KiLockTrack")
    if table is None:
        return None
    row_type = table.type.strip_typedefs().target()
    slot_type = row_type.strip_typedefs().target()
    slots = row_type.sizeof // slot_type.sizeof
    fields = {field.name: field.bitpos // 8 for field in slot_type.strip_typedefs().fields()}
    rows = min(active_count(), table.type.sizeof // row_type.sizeof)
    data = read(int(table.address), rows * row_type.sizeof)
    entries = []
    for number in range(rows):
        for index in range(slots):
            at = number * row_type.sizeof + index * slot_type.sizeof

            def field(name, size=8):
                return int.from_bytes(data[at + fields[name]:at + fields[name] + size], "little")

            lock = field("Lock")
            if lock:
                entries.append((number, lock, field("Rip"), field("Owner", 1) != 0))
    return entries


class LocksCommand(gdb.Command):
    """List every spin lock held or awaited on every processor, from the checked
build's per-processor lock table (kernel/ke/spinlock.c, KiLockTrack): the lock
with its symbol, held or waiting (queued acquirers wait in the table too), and
the call site of the acquire. A free build (DBG=0) keeps no table.
Usage: spindle-locks"""

    def __init__(self):
        self._command = "spindle-locks"
        super().__init__("spindle-locks", gdb.COMMAND_STATUS)

    @readable_errors
    def invoke(self, argument, from_tty):
        entries = lock_table()
        if entries is None:
            raise gdb.GdbError("spindle-locks: no KiLockTrack: a free build (DBG=0) keeps no "
                               "lock table; spindle-lock ADDR still decodes one lock")
        procs, _ = processors(with_threads=False)
        held = {proc.number: int(proc.field("SpinLocksHeld")) for proc in procs}
        print("%d lock(s) in the table of %d processor(s)" % (len(entries), len(procs)))
        for proc in procs:
            mine = [entry for entry in entries if entry[0] == proc.number]
            print("processor %d: SpinLocksHeld %d" % (proc.number, held[proc.number]))
            for _, lock, rip, owner in mine:
                word = u64(lock)
                print("  %-8s %s  word 0x%x  acquire called from %s" % (
                    "holds" if owner else "waits", pointer(lock), word, pointer(rip)))


def log_text():
    ring = lookup_static("KiLogRing")
    written = lookup_static("KiLogRingWritten")
    if ring is None or written is None:
        raise gdb.GdbError("spindle-log: no KiLogRing in this kernel")
    size = ring.type.sizeof
    total = int(written)
    data = read(int(ring.address), size)
    if total <= size:
        text = data[:total]
    else:
        start = total % size
        text = data[start:] + data[:start]
    return text.decode("utf-8", "replace").replace("\r", ""), total, size


class LogCommand(gdb.Command):
    """Show the kernel's recent output from its in-memory log ring (KiLogRing in
kernel/ke/dbgprint.c, every character DbgPrint wrote), as Linux's lx-dmesg.
Usage: spindle-log [N]     the last N lines (default 40; 0 = the whole ring)"""

    def __init__(self):
        self._command = "spindle-log"
        super().__init__("spindle-log", gdb.COMMAND_STATUS)

    @readable_errors
    def invoke(self, argument, from_tty):
        count = int(gdb.parse_and_eval(argument)) if argument.strip() else 40
        text, total, size = log_text()
        lines = text.split("\n")
        if total > size:
            lines = lines[1:]  # the oldest line was cut by the ring
        if lines and lines[-1] == "":
            lines = lines[:-1]
        shown = lines if count == 0 else lines[-count:]
        print("-- kernel log: %d character(s) printed, the last %d kept; %d line(s) shown --" % (
            total, min(total, size), len(shown)))
        for line in shown:
            print(line)


def bugcheck_name(code):
    names = lookup_static("KiBugCheckNames")
    if names is not None:
        low, high = names.type.strip_typedefs().range()
        for i in range(low, high + 1):
            if int(names[i]["Code"]) == code:
                return names[i]["Name"].string()
    return "?"


class StopCommand(gdb.Command):
    """Show the last bug check (WinDbg's !analyze -v in spirit): the code and its name,
the four parameters, whether it is stopping the system, the raising processor's
registers (from the trap frame when it came from an exception) and stack, and
every other processor's RIP. The kernel records it first thing in KeBugCheckEx
(KiBugCheckData), so `break KeBugCheckEx`, a stop in a KT_EXPECT_BUGCHECK catcher
or in HalExitEmulator all show it; QEMU exits after the report, so stop before.
Usage: spindle-stop"""

    def __init__(self):
        self._command = "spindle-stop"
        super().__init__("spindle-stop", gdb.COMMAND_STATUS)

    @readable_errors
    def invoke(self, argument, from_tty):
        data = lookup_static("KiBugCheckData")
        if data is None:
            raise gdb.GdbError("spindle-stop: no KiBugCheckData in this kernel")
        code = int(data["Code"])
        if code == 0:
            print("no bug check has been raised")
            return
        params = [int(data["Parameter"][i]) & 0xFFFFFFFFFFFFFFFF for i in range(4)]
        number = int(data["Processor"])
        frame = int(data["TrapFrame"].address) if int(data["HasTrapFrame"]) else 0
        stopping = int(data["Stopping"]) != 0
        print("*** STOP: 0x%08X (0x%016x, 0x%016x, 0x%016x, 0x%016x) %s" % (
            code, params[0], params[1], params[2], params[3], bugcheck_name(code)))
        print("    raised on processor %d; %s" % (number, "stopping the system" if stopping else
                                                  "not stopping the system: a "
                                                  "KT_EXPECT_BUGCHECK caught it or is "
                                                  "catching it"))
        procs, _ = processors()
        raiser = [proc for proc in procs if proc.number == number]
        if frame:
            print("  registers (the trap frame's, copied to 0x%x; vector %d, error code 0x%x):"
                  % (frame, u64(frame + TRAP_FRAME["vector"]), u64(frame + TRAP_FRAME["error"])))
            regs = [(name, u64(frame + 8 * i)) for i, name in enumerate(TRAP_FRAME_GPRS)]
            regs += [(name, u64(frame + off)) for name, off in TRAP_FRAME.items()
                     if name not in ("vector", "error")]
        elif raiser and raiser[0].thread is not None:
            print("  registers (processor %d's vCPU, thread %d, now):" % (
                number, raiser[0].thread.num))
            regs = []
            with ThreadSelection():
                raiser[0].thread.switch()
                for name in ("rip", "rsp", "rbp", "rax", "rbx", "rcx", "rdx", "rsi", "rdi",
                             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "eflags",
                             "cr8"):
                    try:
                        regs.append((name, register(name)))
                    except (gdb.error, ValueError):
                        pass
        else:
            regs = []
            print("  registers: processor %d has no vCPU thread" % number)
        for index in range(0, len(regs), 4):
            print("    " + "  ".join("%-6s 0x%016x" % pair for pair in regs[index:index + 4]))
        if regs and dict(regs).get("rip"):
            print("    at %s" % pointer(dict(regs)["rip"]))
        if raiser and raiser[0].thread is not None:
            print("  stack of processor %d now (bt):" % number)
            with ThreadSelection():
                raiser[0].thread.switch()
                try:
                    text = gdb.execute("bt 24", to_string=True)
                except gdb.error as error:
                    text = "(bt failed: %s)\n" % error
            for line in text.rstrip("\n").splitlines():
                print("    " + line)
        print("  other processors:")
        for proc in procs:
            if proc.number == number:
                continue
            rip = proc.state["rip"] if proc.thread is not None else None
            frozen = int(proc.field("FrozenRip"))
            print("    processor %d: RIP %s%s" % (
                proc.number, pointer(rip) if rip is not None else "? (no vCPU thread)",
                ", frozen by the bug check's NMI at %s" % pointer(frozen) if frozen else ""))


# ---------------------------------------------------------------- timers, pool, PRCB, I/O objects


class TimersCommand(gdb.Command):
    """List the kernel's timer list (KiTimerListHead, kernel/ke/timer.c), in expiry
order: each KTIMER with its due tick and how far away it is, the period, the DPC
and its routine, the processor whose list holds it. Clock ticks are KiTickCount's.
Usage: spindle-timers"""

    def __init__(self):
        self._command = "spindle-timers"
        super().__init__("spindle-timers", gdb.COMMAND_STATUS)

    @readable_errors
    def invoke(self, argument, from_tty):
        head = lookup_static("KiTimerListHead")
        tick = lookup_static("KiTickCount")
        if head is None:
            raise gdb.GdbError("spindle-timers: no KiTimerListHead in this kernel")
        now = int(tick) if tick is not None else None
        walk = ListWalk(int(head.address))
        lock = lookup_static("KiTimerLock")
        print("timer list 0x%x: %d timer(s); clock tick %s%s" % (
            int(head.address), len(walk.entries), now if now is not None else "?",
            "; KiTimerLock word 0x%x" % int(lock) if lock is not None else ""))
        for entry in walk.entries:
            timer = entry - 32  # KTIMER.TimerListEntry (include/wdm.h)
            due = u64(timer + 24)
            dpc = u64(timer + 48)
            processor = u32(timer + 56)
            period = u32(timer + 60)
            routine = u64(dpc + offset("KDPC", "DeferredRoutine")) if dpc else 0
            print("  KTIMER 0x%x  due tick %d (%s)  period %s  processor %d  DPC %s%s" % (
                timer, due, "in %d ticks" % (due - now) if now is not None and due >= now else
                "due", "%d ms" % period if period else "none (one-shot)", processor,
                pointer(dpc), " routine %s" % pointer(routine) if dpc else ""))
        if walk.error:
            print("  walk stopped: %s" % walk.error)


def tag_text(tag):
    chars = "".join(chr((tag >> shift) & 0xFF) for shift in (0, 8, 16, 24))
    return "".join(c if 32 <= ord(c) < 127 else "." for c in chars)


class PoolCommand(gdb.Command):
    """Show pool usage per tag (as WinDbg's !poolused): outstanding allocations and
bytes requested, from the allocator's tag table (ExpTags in kernel/ex/pool.c),
most bytes first.
Usage: spindle-pool"""

    def __init__(self):
        self._command = "spindle-pool"
        super().__init__("spindle-pool", gdb.COMMAND_STATUS)

    @readable_errors
    def invoke(self, argument, from_tty):
        tags = lookup_static("ExpTags")
        used = lookup_static("ExpTagUsed")
        if tags is None or used is None:
            raise gdb.GdbError("spindle-pool: no ExpTags/ExpTagUsed in this kernel")
        low, high = tags.type.strip_typedefs().range()
        rows = []
        for i in range(low, high + 1):
            if int(used[i]):
                rows.append((int(tags[i]["Tag"]), int(tags[i]["Allocations"]),
                             int(tags[i]["Bytes"])))
        rows.sort(key=lambda row: (-row[2], row[0]))
        print("%-6s %-10s %12s %14s" % ("Tag", "(hex)", "Allocations", "Bytes"))
        for tag, allocations, size in rows:
            print("%-6s 0x%08x %12d %14d" % (tag_text(tag), tag, allocations, size))
        print("%d tag(s); %d allocation(s), %d byte(s) outstanding" % (
            len(rows), sum(r[1] for r in rows), sum(r[2] for r in rows)))


def value_text(value):
    kind = value.type.strip_typedefs().code
    if kind == gdb.TYPE_CODE_PTR:
        return pointer(int(value) & 0xFFFFFFFFFFFFFFFF)
    if kind in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_BOOL, gdb.TYPE_CODE_ENUM, gdb.TYPE_CODE_CHAR):
        number = int(value)
        return "%d (0x%x)" % (number, number & 0xFFFFFFFFFFFFFFFF) if number > 9 else str(number)
    text = str(value)
    return text if len(text) < 200 else text[:200] + " ..."


class PrcbCommand(gdb.Command):
    """Show processor N's KPRCB (kernel/ki.h) field by field, with symbols for pointers,
and its vCPU thread and IRQL.
Usage: spindle-prcb N"""

    def __init__(self):
        self._command = "spindle-prcb"
        super().__init__("spindle-prcb", gdb.COMMAND_STATUS)

    @readable_errors
    def invoke(self, argument, from_tty):
        if not argument.strip():
            raise gdb.GdbError("usage: spindle-prcb N")
        proc = processor_by_number(parse_cpu(argument))
        print("KPRCB 0x%x (processor %d)%s" % (
            proc.address, proc.number,
            ", vCPU thread %d, IRQL %s" % (proc.thread.num, proc.state["cr8"])
            if proc.thread is not None else ", no vCPU thread yet"))
        for field in proc.prcb.type.strip_typedefs().fields():
            if field.name is None:
                continue
            value = proc.prcb[field.name]
            if field.name == "DpcData":
                for index in range(2):
                    data = value[index]
                    print("  %-18s [%d] depth %d, DPCs run %s, lock word 0x%x" % (
                        "DpcData", index, int(data["DpcQueueDepth"]),
                        value_text(data["DpcCount"]) if "DpcCount" in
                        [f.name for f in data.type.strip_typedefs().fields()] else "?",
                        int(data["DpcLock"])))
                continue
            print("  %-18s %s" % (field.name, value_text(value)))


def device_type_name(device_type):
    for name, number in (("FILE_DEVICE_UNKNOWN", 0x22), ("FILE_DEVICE_DISK", 0x07),
                         ("FILE_DEVICE_SERIAL_PORT", 0x1B), ("FILE_DEVICE_NULL", 0x15)):
        if device_type == number:
            return name
    return ""


def unicode_text(value):
    try:
        length = int(value["Length"]) // 2
        buffer = int(value["Buffer"])
        if length == 0 or buffer == 0:
            return '""'
        raw = read(buffer, length * 2)
        return '"%s"' % raw.decode("utf-16-le", "replace")
    except (gdb.error, gdb.MemoryError):
        return "?"


def typed(address, type_name):
    object_type = lookup_type(type_name) or lookup_type("struct _" + type_name)
    if object_type is None:
        raise gdb.GdbError("no type %s in the debug information" % type_name)
    return gdb.Value(address).cast(object_type.pointer()).dereference()


class DevobjCommand(gdb.Command):
    """Describe the DEVICE_OBJECT at ADDR: type check, driver, next and attached
devices, flags, extension, type, stack size, the StartIo device queue (busy,
entries), the current IRP and the I/O manager's per-device flags.
Usage: spindle-devobj ADDR"""

    def __init__(self):
        self._command = "spindle-devobj"
        super().__init__("spindle-devobj", gdb.COMMAND_DATA, gdb.COMPLETE_EXPRESSION)

    @readable_errors
    def invoke(self, argument, from_tty):
        address = address_of(argument, ("DEVICE_OBJECT",))
        device = typed(address, "DEVICE_OBJECT")
        kind = int(device["Type"])
        print("DEVICE_OBJECT 0x%x: Type %d%s, Size 0x%x, ReferenceCount %d" % (
            address, kind, "" if kind == 3 else " (not IO_TYPE_DEVICE 3: not a device object?)",
            int(device["Size"]), int(device["ReferenceCount"])))
        driver = int(device["DriverObject"])
        print("  DriverObject   %s" % pointer(driver))
        print("  NextDevice     %s" % pointer(int(device["NextDevice"])))
        print("  AttachedDevice %s" % pointer(int(device["AttachedDevice"])))
        print("  Flags 0x%x, Characteristics 0x%x, DeviceType 0x%x %s, StackSize %d" % (
            int(device["Flags"]), int(device["Characteristics"]), int(device["DeviceType"]),
            device_type_name(int(device["DeviceType"])), int(device["StackSize"])))
        print("  DeviceExtension %s" % pointer(int(device["DeviceExtension"])))
        print("  CurrentIrp     %s" % pointer(int(device["CurrentIrp"])))
        queue = address + field_offset(device.type.strip_typedefs(), "DeviceQueue")[0]
        lines = devq_lines(queue)
        print("  DeviceQueue:   " + lines[0])
        for line in lines[1:]:
            print("  " + line)
        extension = int(device["DeviceObjectExtension"])
        if extension:
            ext = typed(extension, "DEVOBJ_EXTENSION")
            print("  DeviceObjectExtension 0x%x: ExtensionFlags 0x%x, StartIoFlags 0x%x, "
                  "StartIoCount %d" % (extension, int(ext["ExtensionFlags"]),
                                       int(ext["StartIoFlags"]), int(ext["StartIoCount"])))


class DrvobjCommand(gdb.Command):
    """Describe the DRIVER_OBJECT at ADDR: name, its devices (the NextDevice chain),
DriverInit, DriverStartIo, DriverUnload and every MajorFunction entry with its
symbol (entries that are the I/O manager's default are counted, not listed).
Usage: spindle-drvobj ADDR"""

    def __init__(self):
        self._command = "spindle-drvobj"
        super().__init__("spindle-drvobj", gdb.COMMAND_DATA, gdb.COMPLETE_EXPRESSION)

    @readable_errors
    def invoke(self, argument, from_tty):
        address = address_of(argument, ("DRIVER_OBJECT",))
        driver = typed(address, "DRIVER_OBJECT")
        kind = int(driver["Type"])
        print("DRIVER_OBJECT 0x%x: Type %d%s, Size 0x%x, name %s" % (
            address, kind, "" if kind == 4 else " (not IO_TYPE_DRIVER 4: not a driver object?)",
            int(driver["Size"]), unicode_text(driver["DriverName"])))
        devices = []
        device = int(driver["DeviceObject"])
        while device and len(devices) < 1000:
            devices.append(device)
            device = int(typed(device, "DEVICE_OBJECT")["NextDevice"])
        print("  devices (%d): %s" % (len(devices), ", ".join("0x%x" % d for d in devices)
                                      or "none"))
        for name in ("DriverInit", "DriverStartIo", "DriverUnload"):
            print("  %-14s %s" % (name, pointer(int(driver[name]))))
        table = driver["MajorFunction"]
        low, high = table.type.strip_typedefs().range()
        routines = [int(table[i]) for i in range(low, high + 1)]
        counts = {}
        for routine in routines:
            counts[routine] = counts.get(routine, 0) + 1
        default = max(counts, key=counts.get) if counts else 0
        print("  MajorFunction: %d of %d entries are %s (the default)" % (
            counts.get(default, 0), len(routines), pointer(default)))
        for index, routine in enumerate(routines):
            if routine != default:
                print("    [0x%02x] %-28s %s" % (index, IRP_MJ_NAMES.get(index, "?"),
                                                 pointer(routine)))


class PteCommand(gdb.Command):
    """Show how an address is mapped: the entry at each page-table level (PML4, PDPT, PD,
PT) of the selected vCPU's CR3, with its frame and rights, and the resulting protection.
Usage: spindle-pte ADDR"""

    LEVELS = ("PML4", "PDPT", "PD", "PT")

    def __init__(self):
        self._command = "spindle-pte"
        super().__init__("spindle-pte", gdb.COMMAND_DATA)

    @staticmethod
    def rights(entry):
        return "%s%s%s" % ("R", "W" if entry & 0x2 else "-", "-" if entry >> 63 else "X")

    @readable_errors
    def invoke(self, argument, from_tty):
        if not argument.strip():
            raise gdb.GdbError("usage: spindle-pte ADDR")
        address = int(gdb.parse_and_eval(argument)) & 0xFFFFFFFFFFFFFFFF
        print(pte_report(address, register("cr3")))


def pte_report(address, cr3):
    """The level-by-level walk of address under cr3, as spindle-pte prints it."""
    lines = ["0x%016x (CR3 0x%x)" % (address, cr3 & 0x000FFFFFFFFFF000)]
    table = cr3 & 0x000FFFFFFFFFF000
    writable, executable = True, True
    for level in range(4):
        shift = 39 - 9 * level
        index = (address >> shift) & 0x1FF
        entry_address = table + index * 8
        entry = u64(entry_address)
        name = PteCommand.LEVELS[level]
        if not entry & 1:
            lines.append("  %-4s [%3d] at 0x%x: 0x%016x not present" % (name, index,
                                                                         entry_address, entry))
            lines.append("  => not mapped (an access faults)")
            return "\n".join(lines)
        large = level in (1, 2) and entry & 0x80
        frame = entry & 0x000FFFFFFFFFF000
        writable = writable and bool(entry & 0x2)
        executable = executable and not entry >> 63
        kind = {1: "1 GiB page", 2: "2 MiB page"}.get(level, "4 KiB page") if (large or level == 3) \
            else "table"
        lines.append("  %-4s [%3d] at 0x%x: 0x%016x %s %s%s frame 0x%x" % (
            name, index, entry_address, entry, PteCommand.rights(entry), kind,
            " uncached" if entry & 0x10 else "", frame))
        if large or level == 3:
            size = 1 << shift
            physical = (frame & ~(size - 1)) + (address & (size - 1))
            lines.append("  => %s physical 0x%x, %s" % (
                "read-write" if writable else "read-only", physical,
                "executable" if executable else "no-execute"))
            return "\n".join(lines)
        table = frame
    return "\n".join(lines)
def lock_order_edges():
    """The verifier's recorded edges: [(from, to, processor, irql, from_rip, [stack])]."""
    try:
        enabled = int(gdb.parse_and_eval("KiVerifierEnabled"))
    except gdb.error:
        raise gdb.GdbError("no lock-order verifier in this kernel (free build, DBG=0)")
    if not enabled:
        raise gdb.GdbError("the lock-order verifier is off (verifier=0, or not started yet)")
    table = int(gdb.parse_and_eval("KiVfEdges"))
    count = int(gdb.parse_and_eval("KiVfMaxEdges"))
    edge_type = gdb.lookup_type("KI_VF_EDGE")
    stride = edge_type.sizeof
    fields = {field.name: field.bitpos // 8 for field in edge_type.fields()}
    depth = edge_type["Stack"].type.sizeof // 8
    data = bytes(gdb.selected_inferior().read_memory(table, stride * count))
    edges = []
    for index in range(count):
        base = index * stride
        source = struct.unpack_from("<Q", data, base + fields["From"])[0]
        if source == 0:
            continue
        target = struct.unpack_from("<Q", data, base + fields["To"])[0]
        processor = struct.unpack_from("<I", data, base + fields["Processor"])[0]
        irql = data[base + fields["Irql"]]
        from_rip = struct.unpack_from("<Q", data, base + fields["FromRip"])[0]
        stack = [value for value in struct.unpack_from("<%dQ" % depth, data,
                                                       base + fields["Stack"]) if value != 0]
        edges.append((source, target, processor, irql, from_rip, stack))
    return edges


class LockOrderCommand(gdb.Command):
    """Show the lock-order verifier's graph (checked build): every recorded order
"A -> B" (B taken while A was held), with the processor and IRQL of its first
occurrence, where A had been acquired and the stack that first took B.
With ADDR, only the orders into or out of the lock at ADDR.
Usage: spindle-lockorder [ADDR]"""

    def __init__(self):
        self._command = "spindle-lockorder"
        super().__init__("spindle-lockorder", gdb.COMMAND_DATA, gdb.COMPLETE_EXPRESSION)

    @readable_errors
    def invoke(self, argument, from_tty):
        edges = lock_order_edges()
        if argument.strip():
            lock = address_of(argument, ("KSPIN_LOCK",))
            edges = [edge for edge in edges if lock in (edge[0], edge[1])]
            print("lock 0x%x%s: %d recorded orders" % (lock, describe_symbol(lock), len(edges)))
        else:
            print("lock-order graph: %d recorded orders" % len(edges))
        for source, target, processor, irql, from_rip, stack in sorted(edges):
            print("  0x%x%s -> 0x%x%s  (processor %d, IRQL %d)"
                  % (source, describe_symbol(source), target, describe_symbol(target),
                     processor, irql))
            print("    first lock acquired at 0x%x %s" % (from_rip, symbol(from_rip)))
            for depth, address in enumerate(stack):
                print("    #%d 0x%x %s" % (depth, address, symbol(address)))


def describe_symbol(address):
    name = symbol(address)
    return " <%s>" % name if name else ""


def register_all():
    SpindleCommand()
    CpusCommand()
    CpuCommand()
    IrqlCommand()
    LockCommand()
    DpcsCommand()
    DevqCommand()
    IrpCommand()
    ListCommand()
    PteCommand()
    AttachCommand()
    LocksCommand()
    LogCommand()
    StopCommand()
    TimersCommand()
    PoolCommand()
    PrcbCommand()
    DevobjCommand()
    DrvobjCommand()
    LockOrderCommand()
    CpuFunction()
    register_unwinder()
    gdb.printing.register_pretty_printer(gdb.current_objfile(), build_pretty_printers(),
                                         replace=True)


register_all()
