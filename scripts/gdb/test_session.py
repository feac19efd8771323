# SPDX-License-Identifier: MIT
"""
The scripted gdb session of `make test-gdb` (scripts/test-gdb.sh runs it in
gdb -batch after scripts/gdb/spindle.gdb has attached and stopped at
KiSystemStartup). The kernel runs only the GdbTarget tests
(tests/gdb_targets.c); the session breaks in them and checks:

  boot-64bit      the hardware breakpoint at KiSystemStartup hits in long mode
  next, step      both move through source lines
  stepi-queued    stepi walks through KeAcquireInStackQueuedSpinLock and back,
                  IRQL (CR8) rising to DISPATCH_LEVEL and the lock word
                  becoming the handle on the way
  processors-online  KiActiveProcessorCount equals the -smp QEMU was given
  dpc-last-cpu    a breakpoint in a DPC routine targeted at the last processor
                  hits on that vCPU's thread, at DISPATCH_LEVEL
  spindle-cpus    lists every processor (and `info threads` every vCPU)
  spindle-dpcs    shows a DPC waiting in processor 0's queue
  spindle-lock    free before use; held by the last processor while its DPC
                  holds it; queued: owner, tail and (SMP) a waiter
  spindle-devq, spindle-irp, spindle-list
  spindle-pte     kernel code read-execute, data read-write no-execute, page 0 unmapped
                  a busy device queue with two waiting IRPs: order, cancel
                  routine by symbol, current stack location, status
  auto-load       opening kernel.elf ran kernel.elf-gdb.py (the commands were auto-loaded)
  spindle-locks   the lock table: the last processor holds GdbTargetSpinLock, acquired
                  in GdbTargetSpinLockDpc; (SMP) it waits for the queued lock
  bt-through-trap bt inside that DPC on the last processor goes through the DPC
                  interrupt's trap stub (isr_common) into the interrupted code (the
                  trap-frame unwinder)
  spindle-prcb    the last processor's KPRCB
  spindle-timers, spindle-pool, spindle-devobj, spindle-drvobj
                  a timer due in an hour with its DPC routine, the 'GdbT' pool tag's
                  3 blocks and 600 bytes, a driver and its device
  spindle-stop    in the catcher of a caught KeBugCheckEx(0xE2, 0x5b1, ...): code,
                  name, parameters, processor 0's registers and stack, the others' RIP
  bt-through-exception, spindle-stop-trap
                  in the catcher of a page fault in GdbTargetTouch: bt goes through the
                  exception's trap frame to the faulting function and the test; spindle-stop
                  shows code 0x50 and the trap frame's registers (RIP in GdbTargetTouch)
  spindle-log     the kernel's log ring holds the suite's header and earlier results
  spindle-lockorder  the verifier's graph holds outer -> inner with the
                  acquiring test on the recorded stack (free build: says none)
  detach          the session detaches; test-gdb.sh then checks exit 33
  target-gone     after detach, the commands refuse to show the ELF file's stale data

Each check prints one `PASS: name: detail` or `FAIL: name: detail` line;
test-gdb.sh requires a PASS for every expected name and no FAIL. Each
resumption of the target is bounded: a watchdog interrupts it (SIGINT to gdb)
after $spindle_step_timeout seconds.
"""
import os
import re
import signal
import threading
import traceback

import gdb

KERNEL_BASE = 0xFFFFFFFF80000000
EFER_LMA = 1 << 10
DISPATCH_LEVEL = 2

failures = []


def setting(name, default):
    value = gdb.convenience_variable(name)
    return int(value) if value is not None else default


CPUS = setting("spindle_expected_cpus", 1)  # the -smp QEMU was given
STEP_TIMEOUT = setting("spindle_step_timeout", 150)
CHECKED = setting("spindle_checked", 1) == 1  # DBG=1: the lock word names its owner
LAST = None  # the last processor online; set at the first GdbTarget stop


def report(name, ok, detail):
    print("%s: %s: %s" % ("PASS" if ok else "FAIL", name, detail), flush=True)
    if not ok:
        failures.append(name)
    return ok


class Timeout(Exception):
    pass


def run(command, timeout=None, echo=True):
    """
    Runs a gdb command and returns its output. With a timeout, a watchdog
    interrupts the target (SIGINT, as Ctrl-C would) if it has not stopped by
    then, and the command raises Timeout.
    """
    timer = None
    fired = threading.Event()
    if timeout:
        def interrupt():
            fired.set()
            os.kill(os.getpid(), signal.SIGINT)
        timer = threading.Timer(timeout, interrupt)
        timer.daemon = True
        timer.start()
    if echo:
        print("(gdb) %s" % command, flush=True)
    try:
        output = gdb.execute(command, to_string=True)
    finally:
        if timer is not None:
            timer.cancel()
    if echo and output.strip():
        print(output.rstrip("\n"), flush=True)
    if fired.is_set():
        raise Timeout("'%s' did not stop within %d s; interrupted at %s" % (
            command, timeout, frame_name() or "0x%x" % reg("pc")))
    return output


def resume(command="continue"):
    return run(command, timeout=STEP_TIMEOUT)


def reg(name):
    return int(gdb.parse_and_eval("$" + name)) & 0xFFFFFFFFFFFFFFFF


def word(address):
    return int.from_bytes(bytes(gdb.selected_inferior().read_memory(address, 8)), "little")


def address(expression):
    return int(gdb.parse_and_eval(expression)) & 0xFFFFFFFFFFFFFFFF


def frame_name():
    try:
        frame = gdb.selected_frame()
    except gdb.error:
        return None
    return frame.name()


def current_line():
    sal = gdb.selected_frame().find_sal()
    return (sal.symtab.filename if sal.symtab else None), sal.line


def processor_number():
    return int(gdb.parse_and_eval("$spindle_cpu()"))


# ---------------------------------------------------------------- boot, next, step


def check_boot():
    """The breakpoint sits at KiSystemStartup's first line (after any prologue)."""
    name = frame_name()
    pc = reg("pc")
    entry = address("(unsigned long)&KiSystemStartup")
    arch = gdb.selected_frame().architecture().name()
    efer = reg("efer")
    report("boot-64bit", name == "KiSystemStartup" and 0 <= pc - entry < 64
           and pc >= KERNEL_BASE and efer & EFER_LMA and "x86-64" in arch,
           "stopped in %s at 0x%x (KiSystemStartup+0x%x), EFER 0x%x (LMA %s), arch %s" % (
               name, pc, pc - entry, efer, "set" if efer & EFER_LMA else "clear", arch))
    output = run("spindle-lock &GdbTargetSpinLock")
    report("spindle-lock-free", "\n  free" in output, "an unused lock reads free")


def check_next():
    """next stays in KiSystemStartup, lands on a new line each time, and gets past the
    current statement (-O2 inlining may show an inlined line on the way)."""
    start = current_line()
    lines = [start]
    frames = set()
    while len(lines) <= 6 and (len(lines) < 3 or max(n for _, n in lines) <= start[1]):
        resume("next")
        lines.append(current_line())
        frames.add(frame_name())
    moved = all(b != a for a, b in zip(lines, lines[1:]))
    report("next", moved and frames == {"KiSystemStartup"} and all(f for f, _ in lines)
           and max(n for _, n in lines) > start[1],
           "KiSystemStartup lines %s" % " -> ".join("%s:%d" % (os.path.basename(f or "?"), n)
                                                   for f, n in lines))


def in_real_callee():
    """The selected frame is a called (not inlined) function below KiSystemStartup."""
    frame = gdb.selected_frame()
    return (frame.name() not in (None, "KiSystemStartup") and frame.type() != gdb.INLINE_FRAME
            and frame.older() is not None and frame.older().name() == "KiSystemStartup")


def check_step():
    """From KiSystemStartup's first line, step (through inlined code such as x86_rdtsc)
    until it enters the first called function; finish returns to KiSystemStartup. finish is
    never run from KiSystemStartup itself, which never returns."""
    origin = current_line()
    steps = 0
    while steps < 10 and not in_real_callee():
        resume("step")
        steps += 1
    name = frame_name()
    filename, line = current_line()
    if not in_real_callee():
        report("step", False, "%d steps from %s:%d did not enter a called function (in %s)" % (
            steps, os.path.basename(origin[0] or "?"), origin[1], name))
        return
    resume("finish")
    back = frame_name()
    report("step", name not in (None, "KiSystemStartup") and filename is not None
           and filename != origin[0] and line > 0 and back == "KiSystemStartup",
           "from %s:%d into %s at %s:%d, finish back to %s" % (
               os.path.basename(origin[0] or "?"), origin[1], name,
               os.path.basename(filename or "?"), line, back))


# ---------------------------------------------------------------- the GdbTarget stops


def on_dpc_last_cpu():
    thread = gdb.selected_thread().num
    number = processor_number()
    apic = int(gdb.parse_and_eval("KiProcessorBlock[%d].ApicId" % number))
    cr8 = reg("cr8")
    # QEMU numbers vCPU threads from 1 and gives vCPU n the APIC ID n.
    report("dpc-last-cpu", number == LAST and thread - 1 == apic and cr8 == DISPATCH_LEVEL,
           "GdbTargetDpcRoutine hit on thread %d (vCPU %d, APIC ID %d), processor %d of %d, "
           "CR8 %d" % (thread, thread - 1, apic, number, LAST + 1, cr8))
    output = run("spindle-cpus")
    rows = [line for line in output.splitlines() if re.match(r"\s*\d+\s+\d+\s+\d+\s", line)]
    numbers = sorted(int(line.split()[0]) for line in rows)
    last_row = [line for line in rows if int(line.split()[0]) == LAST]
    header = re.search(r"(\d+) processor\(s\) active", output)
    ok = (numbers == list(range(LAST + 1)) and header and int(header.group(1)) == LAST + 1
          and last_row and "2 DISPATCH_LEVEL" in last_row[0]
          and "GdbTargetDpcRoutine" in last_row[0]
          and "current test: GdbTarget:dpc_runs_on_last_processor" in output)
    report("spindle-cpus", ok, "%d processor rows %s, the last at DISPATCH_LEVEL in its DPC" % (
        len(rows), numbers))
    output = run("spindle-prcb %d" % LAST)
    prcb = address("(unsigned long)&KiProcessorBlock[%d]" % LAST)
    report("spindle-prcb", "KPRCB 0x%x (processor %d)" % (prcb, LAST) in output
           and re.search(r"^\s+Number\s+%d\b" % LAST, output, re.M) is not None
           and re.search(r"^\s+DpcRoutineActive\s+1\b", output, re.M) is not None,
           "KiProcessorBlock[%d] at 0x%x: Number %d, DpcRoutineActive 1" % (LAST, prcb, LAST))
    threads = [line for line in run("info threads").splitlines()
               if re.match(r"[\s*]+\d+\s+Thread", line)]
    report("info-threads", len(threads) == CPUS, "%d vCPU threads listed" % len(threads))


def caller_local(name):
    """The address of an address-taken local of the caller (never optimized out)."""
    return int(gdb.selected_frame().older().read_var(name).address)


def on_dpc_queued():
    dpc = caller_local("Dpc")
    output = run("spindle-dpcs 0")
    queued = [line for line in output.splitlines() if "KDPC 0x%x" % dpc in line]
    irql = run("spindle-irql")
    report("spindle-dpcs", len(queued) == 1 and "GdbTargetCountDpc" in queued[0]
           and "DISPATCH_LEVEL" in irql,
           "KDPC 0x%x queued on processor 0 with its routine's symbol; %s" % (
               dpc, irql.strip()))


def on_spin_lock_held():
    number = processor_number()
    output = run("spindle-lock &GdbTargetSpinLock")
    if CHECKED:
        ok = "held by processor %d" % LAST in output
    else:
        ok = "ordinary spin lock, held" in output
    report("spindle-lock-held", ok and number == LAST,
           "held on processor %d: %s" % (number, " / ".join(output.strip().splitlines()[1:])))
    check_locks_held()
    check_bt_through_trap()


def locks_section(output, number):
    """The lines spindle-locks prints under `processor N:`."""
    lines, inside = [], False
    for line in output.splitlines():
        if line.startswith("processor "):
            inside = line.startswith("processor %d:" % number)
            continue
        if inside:
            lines.append(line)
    return lines


def check_locks_held():
    if not CHECKED:
        try:
            gdb.execute("spindle-locks", to_string=True)
            report("spindle-locks", False, "a free build has no lock table, yet no error")
        except gdb.error as error:
            report("spindle-locks", "free build" in str(error), "free build: %s" % error)
        return
    output = run("spindle-locks")
    mine = locks_section(output, LAST)
    held = [line for line in mine if "<GdbTargetSpinLock>" in line]
    report("spindle-locks", len(held) == 1 and held[0].split()[0] == "holds"
           and "acquire called from" in held[0] and "<GdbTargetSpinLockDpc+" in held[0],
           "processor %d holds GdbTargetSpinLock, acquired in GdbTargetSpinLockDpc: %s" % (
               LAST, held[0].strip() if held else "not listed"))


def check_bt_through_trap():
    """bt in a DPC on the last processor: through the trap stub into the interrupted code."""
    output = run("bt")
    names = re.findall(r"^#(\d+)\s+(?:0x[0-9a-f]+ in )?(\S+) \(", output, re.M)
    order = [name for _, name in names]
    ok = False
    detail = "frames: %s" % " <- ".join(order)
    if "isr_common" in order:
        index = order.index("isr_common")
        after = order[index + 1:]
        ok = (order[0] == "GdbTargetHoldingSpinLock"
              and "GdbTargetSpinLockDpc" in order[:index] and len(after) >= 1
              and after[0] != "??" and "??" not in after[:1])
        detail += "; interrupted in %s" % (after[0] if after else "nothing")
    report("bt-through-trap", ok, detail)


def call_site(function_name, callee):
    """Address and length of the call to callee inside function_name."""
    block = gdb.block_for_pc(address("(unsigned long)&%s" % function_name))
    while block.function is None:
        block = block.superblock
    arch = gdb.selected_frame().architecture()
    for insn in arch.disassemble(block.start, block.end - 1):
        if insn["asm"].startswith("call") and "<%s>" % callee in insn["asm"]:
            return insn["addr"], insn["length"]
    return None, None


def on_queued_test_entry():
    function = frame_name()
    site, length = call_site(function, "KeAcquireInStackQueuedSpinLock")
    if site is None:
        report("stepi-queued", False, "no call to KeAcquireInStackQueuedSpinLock in %s" %
               function)
        return
    run("tbreak *0x%x" % site)
    resume()
    lock = address("(unsigned long)&GdbTargetQueuedLock")
    if reg("pc") != site:
        report("stepi-queued", False, "did not reach the call at 0x%x (pc 0x%x)" % (site,
                                                                                   reg("pc")))
        return
    before = (reg("cr8"), word(lock))
    resume("stepi")
    entry = address("(unsigned long)&KeAcquireInStackQueuedSpinLock")
    entered = reg("pc") == entry and frame_name() == "KeAcquireInStackQueuedSpinLock"
    handle = reg("rsi")
    back = site + length
    steps = 1
    functions = {frame_name()}
    word_set_at = None
    highest = reg("cr8")
    while reg("pc") != back and steps < 5000:
        run("stepi", timeout=STEP_TIMEOUT, echo=False)
        steps += 1
        functions.add(frame_name())
        highest = max(highest, reg("cr8"))
        if word_set_at is None and word(lock) == handle:
            word_set_at = (steps, frame_name())
    after = (reg("cr8"), word(lock))
    ok = (entered and reg("pc") == back and before == (0, 0) and after == (DISPATCH_LEVEL,
                                                                           handle)
          and word_set_at is not None)
    report("stepi-queued", ok,
           "%d stepi from the call at 0x%x into KeAcquireInStackQueuedSpinLock and back to "
           "0x%x through %s; CR8 %d -> %d, lock word 0x%x -> 0x%x (= &Handle, set at step "
           "%s)" % (steps, site, back, ", ".join(sorted(f for f in functions if f)),
                    before[0], after[0], before[1], after[1],
                    "%d in %s" % word_set_at if word_set_at else "never"))
    output = run("spindle-lock &GdbTargetQueuedLock")
    report("spindle-lock-queued", "in-stack queued spin lock, held" in output and
           re.search(r"owner\s+KSPIN_LOCK_QUEUE 0x%x\s+processor 0\s+OWNER.*<- tail" % handle,
                     output) is not None,
           "the handle 0x%x is owner and tail on processor 0" % handle)


def on_queued_contended():
    owner = caller_local("Handle")
    tail = word(address("(unsigned long)&GdbTargetQueuedLock"))
    output = run("spindle-lock &GdbTargetQueuedLock")
    ok = (re.search(r"owner\s+KSPIN_LOCK_QUEUE 0x%x\s+processor 0\s+OWNER\s+Next 0x%x" % (
        owner, tail), output) is not None and
          re.search(r"waiter\s+KSPIN_LOCK_QUEUE 0x%x\s+processor %d\s+WAIT\s+Next NULL\s+<- "
                    r"tail" % (tail, LAST), output) is not None)
    report("spindle-lock-waiter", ok, "owner 0x%x on processor 0, waiter 0x%x on processor %d"
           % (owner, tail, LAST))
    if CHECKED:
        output = run("spindle-locks")
        owner_lines = [l for l in locks_section(output, 0) if "<GdbTargetQueuedLock>" in l]
        waiter_lines = [l for l in locks_section(output, LAST) if "<GdbTargetQueuedLock>" in l]
        report("spindle-locks-waiter", len(owner_lines) == 1 and owner_lines[0].split()[0] ==
               "holds" and len(waiter_lines) == 1 and waiter_lines[0].split()[0] == "waits"
               and "<GdbTargetQueuedWaiterDpc+" in waiter_lines[0],
               "processor 0 holds GdbTargetQueuedLock, processor %d waits for it from "
               "GdbTargetQueuedWaiterDpc" % LAST)
    else:
        report("spindle-locks-waiter", True, "free build: no lock table to check")


def on_device_queue_loaded():
    caller = gdb.selected_frame().older()
    queue = int(caller.read_var("Queue").address)
    irps = caller.read_var("Irps")
    first, second = int(irps[1]), int(irps[2])
    output = run("spindle-devq 0x%x" % queue)
    order = re.findall(r"in IRP 0x([0-9a-f]+)", output)
    report("spindle-devq", "Busy TRUE" in output and "Lock: free" in output
           and " 2 entries in queue order" in output
           and [int(x, 16) for x in order] == [first, second],
           "Busy, lock free, waiting IRPs %s" % ", ".join("0x" + x for x in order))
    output = run("spindle-irp 0x%x" % first)
    report("spindle-irp", "Cancel FALSE" in output and "<GdbTargetCancelRoutine>" in output
           and "IoStatus.Status 0x00000103 STATUS_PENDING" in output
           and "StackCount 2, CurrentLocation 2 (stack location 2 of 2 is current)" in output
           and re.search(r"> 2: 0x[0-9a-f]+ IRP_MJ_READ", output) is not None,
           "IRP 0x%x: STATUS_PENDING, cancel routine GdbTargetCancelRoutine, location 2 of 2 "
           "(IRP_MJ_READ) current" % first)
    caller.select()
    output = run("spindle-list &Queue.DeviceListHead IRP Tail.Overlay.DeviceQueueEntry")
    records = [int(x, 16) for x in re.findall(r"-> \(IRP \*\) 0x([0-9a-f]+)", output)]
    printed = run("print Queue.DeviceListHead")
    report("spindle-list", records == [first, second] and "(ring of 2 other entries)" in printed,
           "CONTAINING_RECORD through an anonymous union gives the IRPs; the LIST_ENTRY "
           "printer counts the ring")
    check_pte()


def check_pte():
    """spindle-pte: kernel code read-execute, data read-write no-execute, page 0 unmapped."""
    code = run("spindle-pte &KeGetCurrentIrql")
    data = run("spindle-pte &KiProcessorBlock")
    null = run("spindle-pte 0")
    ok = (re.search(r"PML4 \[511\].*\n.*PDPT \[510\].*\n.*PD .*table.*\n.*PT .* R-X 4 KiB page",
                    code) is not None
          and "=> read-only physical" in code and "executable" in code.split("=>")[1]
          and re.search(r"PT .* RW- 4 KiB page", data) is not None
          and "read-write" in data.split("=>")[1] and "no-execute" in data.split("=>")[1]
          and "=> not mapped" in null)
    report("spindle-pte", ok, "KeGetCurrentIrql R-X, KiProcessorBlock RW- (no-execute), 0 not "
           "mapped" if ok else code + data + null)


def on_objects_ready():
    caller = gdb.selected_frame().older()
    timer = int(caller.read_var("Timer").address)
    device = int(caller.read_var("Device"))
    driver = address("(unsigned long)GdbTargetDriver")
    output = run("spindle-timers")
    line = [l for l in output.splitlines() if "KTIMER 0x%x" % timer in l]
    report("spindle-timers", len(line) == 1 and "routine 0x" in line[0]
           and "<GdbTargetCountDpc>" in line[0] and "period none" in line[0]
           and re.search(r"in \d+ ticks", line[0]) is not None,
           "KTIMER 0x%x listed: %s" % (timer, line[0].strip() if line else "missing"))
    output = run("spindle-pool")
    line = [l for l in output.splitlines() if l.startswith("GdbT ")]
    report("spindle-pool", len(line) == 1 and line[0].split()[2:4] == ["3", "600"],
           "tag GdbT: %s" % (line[0].strip() if line else "missing"))
    output = run("spindle-devobj 0x%x" % device)
    report("spindle-devobj", "DEVICE_OBJECT 0x%x: Type 3," % device in output
           and "DriverObject   0x%x" % driver in output and "FILE_DEVICE_UNKNOWN" in output
           and "StackSize 1" in output,
           "device 0x%x of driver 0x%x, FILE_DEVICE_UNKNOWN, StackSize 1" % (device, driver))
    output = run("spindle-drvobj 0x%x" % driver)
    report("spindle-drvobj", "DRIVER_OBJECT 0x%x: Type 4," % driver in output
           and "devices (1): 0x%x" % device in output
           and "DriverInit     0x" in output and "<GdbTargetKeepDriver>" in output
           and re.search(r"MajorFunction: 28 of 28 entries are 0x[0-9a-f]+ <\w+> \(the default\)",
                         output) is not None,
           "driver 0x%x with device 0x%x, DriverInit GdbTargetKeepDriver, default dispatch" % (
               driver, device))
    output = run("spindle-log 400", echo=False)
    print("(gdb) spindle-log 400   [%d lines; the last 3:]\n%s" % (
        len(output.splitlines()), "\n".join(output.splitlines()[-3:])), flush=True)
    report("spindle-log", "# Spindle test suite: " in output
           and re.search(r"^ok \d+ GdbTarget:spin_lock_held_on_last_processor$", output, re.M)
           and re.search(r"^ok 1 GdbTarget:caught_bug_check_for_spindle_stop$", output, re.M),
           "the log ring holds the suite header and earlier results")


def on_bug_check_caught():
    if int(gdb.parse_and_eval("KiBugCheckData.Code")) == 0x50:
        on_page_fault_caught()
        return
    output = run("spindle-stop")
    others = re.findall(r"^\s+processor (\d+): RIP 0x[0-9a-f]+", output, re.M)
    report("spindle-stop", "*** STOP: 0x000000E2 (0x00000000000005b1, 0x00000000000005b2, "
           "0x00000000000005b3, 0x00000000000005b4) MANUALLY_INITIATED_CRASH" in output
           and "raised on processor 0;" in output and re.search(r"rip\s+0x[0-9a-f]{16}", output)
           and "KeBugCheckEx" in output
           and "KtTest_GdbTarget_caught_bug_check_for_spindle_stop" in output
           and sorted(int(n) for n in others) == list(range(1, CPUS)),
           "code 0xE2 MANUALLY_INITIATED_CRASH, 4 parameters, processor 0's registers and "
           "stack, RIP of processors %s" % others)


def on_page_fault_caught():
    """KtCatchBugCheck inside the page fault GdbTargetTouch took: bt and spindle-stop go
    through the exception's trap frame to the faulting instruction."""
    output = run("bt")
    order = [name for _, name in re.findall(r"^#(\d+)\s+(?:0x[0-9a-f]+ in )?(\S+) \(",
                                            output, re.M)]
    ok = False
    if "isr_common" in order:
        after = order[order.index("isr_common") + 1:]
        ok = (order[0] == "KtCatchBugCheck" and "KeBugCheckEx" in order
              and after[:2] == ["GdbTargetTouch",
                                "KtTest_GdbTarget_page_fault_caught_for_bt_and_spindle_stop"])
    report("bt-through-exception", ok, "frames: %s" % " <- ".join(order))
    output = run("spindle-stop")
    touch = address("(unsigned long)&GdbTargetTouch")
    rip = re.search(r"rip\s+0x([0-9a-f]{16})", output)
    report("spindle-stop-trap", "*** STOP: 0x00000050 (0x00007fff00000000, " in output
           and "PAGE_FAULT_IN_NONPAGED_AREA" in output
           and re.search(r"registers \(the trap frame's, copied to 0x[0-9a-f]+; vector 14, error "
                         r"code", output)
           and rip is not None and 0 <= int(rip.group(1), 16) - touch < 64
           and re.search(r"<GdbTargetTouch(\+0x[0-9a-f]+)?>", output) is not None,
           "code 0x50 with CR2 0x7fff00000000, registers from the trap frame, RIP %s in "
           "GdbTargetTouch" % ("0x" + rip.group(1) if rip else "missing"))


# Stops that come more than once: the number of hits to handle.
REPEATS = {"KtCatchBugCheck": 2}


def on_lock_order_recorded():
    """spindle-lockorder: the order outer -> inner, with the stack of the test that took it."""
    if not CHECKED:
        try:
            output = run("spindle-lockorder")
        except gdb.error as error:
            output = str(error)
        report("spindle-lockorder", "no lock-order verifier" in output or "off" in output,
               "free build: the command says there is no verifier")
        return
    output = run("spindle-lockorder &GdbTargetOuterLock")
    ok = (re.search(r"<GdbTargetOuterLock> -> 0x[0-9a-f]+ <GdbTargetInnerLock>\s+\(processor 0, "
                    r"IRQL 2\)", output) is not None
          and "KtTest_GdbTarget_lock_order_graph_holds_outer_then_inner" in output)
    whole = run("spindle-lockorder")
    ok = ok and re.search(r"lock-order graph: \d+ recorded orders", whole) is not None
    report("spindle-lockorder", ok, "outer -> inner on processor 0 at DISPATCH_LEVEL, "
           "with the acquiring test on its stack")


STOPS = {
    "GdbTargetObjectsReady": on_objects_ready,
    "KtCatchBugCheck": on_bug_check_caught,
    "GdbTargetDpcRoutine": on_dpc_last_cpu,
    "GdbTargetDpcQueued": on_dpc_queued,
    "GdbTargetHoldingSpinLock": on_spin_lock_held,
    "KtTest_GdbTarget_in_stack_queued_acquire_makes_handle_the_tail": on_queued_test_entry,
    "GdbTargetQueuedLockContended": on_queued_contended,
    "GdbTargetDeviceQueueLoaded": on_device_queue_loaded,
    "GdbTargetLockOrderRecorded": on_lock_order_recorded,
}


def stop_identity():
    """Where the target stopped: thread, instruction, stack and the bug check code."""
    return (gdb.selected_thread().num, reg("pc"), reg("sp"),
            int(gdb.parse_and_eval("KiBugCheckData.Code")))


def run_tests():
    global LAST
    expected = dict(STOPS)
    if CPUS < 2:
        del expected["GdbTargetQueuedLockContended"]  # KTEST_SMP_ONLY: skipped
    breakpoints = {name: gdb.Breakpoint(name, internal=False) for name in expected}
    remaining = set(expected)
    hits = {}
    last = None
    while remaining:
        resume()
        name = frame_name()
        # QEMU under TCG sometimes reports one breakpoint hit twice in a row (seen once in
        # CI: KtCatchBugCheck on thread 1, same parameters): the same thread at the same
        # instruction with the same stack is the same stop, not a second call.
        stop = stop_identity()
        if stop == last:
            print("test-gdb: %s reported again at the same instruction and stack; "
                  "resuming" % name, flush=True)
            continue
        last = stop
        if name not in remaining:
            report("breakpoints", False, "stopped in %s, waiting for %s" % (
                name, ", ".join(sorted(remaining))))
            return
        hits[name] = hits.get(name, 0) + 1
        if hits[name] >= REPEATS.get(name, 1):
            breakpoints[name].enabled = False
            remaining.discard(name)
        if LAST is None:
            active = int(gdb.parse_and_eval("KiActiveProcessorCount"))
            report("processors-online", active == CPUS, "%d of %d processors online" % (
                active, CPUS))
            LAST = active - 1
        expected[name]()
    report("breakpoints", True, "all %d GdbTarget stops reached" % len(expected))
    for breakpoint in breakpoints.values():
        breakpoint.delete()


def check_autoload():
    value = gdb.convenience_variable("spindle_autoloaded")
    report("auto-load", value is not None and int(value) == 1,
           "kernel.elf-gdb.py loaded the commands when gdb opened kernel.elf" if value is not None
           else "$spindle_autoloaded unset: spindle.gdb sourced spindle.py itself")


def check_target_gone():
    errors = []
    for command in ("spindle-cpus", "spindle-dpcs", "spindle-log"):
        try:
            output = gdb.execute(command, to_string=True)
            errors.append("%s printed %d line(s)" % (command, len(output.splitlines())))
        except gdb.error as error:
            print("(gdb) %s\n%s" % (command, error), flush=True)
            if "no live target" not in str(error):
                errors.append("%s: %s" % (command, error))
    report("target-gone", not errors, "; ".join(errors) or
           "spindle-cpus, spindle-dpcs and spindle-log say the target is gone")


def main():
    try:
        check_autoload()
        check_boot()
        check_step()
        check_next()
        run_tests()
    except Exception as error:  # a gdb error or an interrupted resumption: a failure
        report("session", False, "%s: %s" % (type(error).__name__, error))
        traceback.print_exc()
    try:
        run("delete")
        run("detach")
        report("detach", True, "detached; the kernel runs on")
        check_target_gone()
    except gdb.error as error:
        report("detach", False, str(error))
    print("test-gdb session: %d failure(s)%s" % (len(failures), ": " + ", ".join(failures)
                                                 if failures else ""), flush=True)
    gdb.execute("quit %d" % (1 if failures else 0))


main()
