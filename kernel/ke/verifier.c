/* SPDX-License-Identifier: MIT */
/*
 * The checked-build lock verifier (verifier.h describes what it checks and
 * reports), the per-processor lock bookkeeping it shares with the deadlock
 * watch, and fault injection.
 *
 * Data (all allocated from pool once at start-up, fixed size):
 *   nodes  one per lock identity that has an edge or an interrupt-level use;
 *          found through NodeHash (linear probing, by address)
 *   edges  one per ordered pair A->B seen; found through EdgeHash (by the
 *          pair); each node lists its out-edges (FirstOut/NextOut)
 * Writers (a new edge, a new node, an identity that ends) hold KiVfLock, a
 * raw lock taken with interrupts off that the verifier itself never sees.
 * Readers look edges and nodes up without it: KiVfSequence is odd while a
 * writer changes the tables, and a reader that saw it odd or changed takes
 * the slow path under the lock. So the common acquisition (no lock held, or
 * an order already known) costs a few loads and no store to shared memory.
 * When a table fills the verifier says so once and stops recording.
 */
#include "kernel/ke/verifier.h"

#include "hal/hal.h"
#include "kernel/ke/ke.h"
#include "lib/lib.h"

#if DBG
/*
 * One lock a processor holds or (queued) waits for. Written only by that
 * processor with interrupts off; other processors read it for reports only.
 */
typedef struct _KI_LOCK_TRACK
{
    PKSPIN_LOCK volatile Lock; // NULL: a free slot
    volatile ULONG_PTR Rip;    // where the acquire was called from
    volatile BOOLEAN Owner;    // FALSE while a queued acquirer still waits
    volatile ULONG64 Sequence; // names this acquisition: (processor + 1) << 48 | its count
} KI_LOCK_TRACK;

KI_LOCK_TRACK KiLockTrack[MAXIMUM_PROCESSORS][KI_LOCK_TRACK_SLOTS]; // the verifier reads it too
static ULONG64 KiLockTrackCount[MAXIMUM_PROCESSORS]; // acquisitions recorded per processor
/* Locks counted but not named because the processor's table was full; its own. */
static ULONG KiLockTrackOverflow[MAXIMUM_PROCESSORS];
#endif

volatile ULONG KiSpinLockTimeoutMs = 20000;

/* ---------------------------------------------------------------- checked-build bookkeeping */

#if DBG
static KI_LOCK_TRACK *
KiLockTrackFind(KI_LOCK_TRACK *Slots, const KSPIN_LOCK *SpinLock)
{
    for (ULONG i = 0; i < KI_LOCK_TRACK_SLOTS; i++)
    {
        if (Slots[i].Lock == SpinLock)
        {
            return &Slots[i];
        }
    }
    return NULL;
}

/* TRUE if this processor holds SpinLock or waits for it as a queued lock. */
BOOLEAN
KiLockTrackIsHeld(PKSPIN_LOCK SpinLock)
{
    ULONG64 Flags = x86_save_disable();
    BOOLEAN Held = KiLockTrackFind(KiLockTrack[KeGetCurrentPrcb()->Number], SpinLock) != NULL;

    x86_restore_flags(Flags);
    return Held;
}

/* Records SpinLock as held (Owner) or waited for, acquired from Rip; counts it. */
VOID
KiLockTrackInsert(PKSPIN_LOCK SpinLock, ULONG_PTR Rip, BOOLEAN Owner)
{
    ULONG64 Flags = x86_save_disable();
    PKPRCB Prcb = KeGetCurrentPrcb();
    KI_LOCK_TRACK *Slot = KiLockTrackFind(KiLockTrack[Prcb->Number], NULL);

    if (Slot != NULL)
    {
        Slot->Rip = Rip;
        Slot->Owner = Owner;
        Slot->Sequence = ((ULONG64)(Prcb->Number + 1) << 48) | ++KiLockTrackCount[Prcb->Number];
        /* Release: a reporting processor that finds the lock sees its RIP too. */
        __atomic_store_n(&Slot->Lock, SpinLock, __ATOMIC_RELEASE);
    }
    else
    {
        KiLockTrackOverflow[Prcb->Number]++;
    }
    Prcb->SpinLocksHeld++;
    x86_restore_flags(Flags);
}

/* A queued acquirer's wait is over: it owns SpinLock now. */
VOID
KiLockTrackSetOwner(PKSPIN_LOCK SpinLock)
{
    ULONG64 Flags = x86_save_disable();
    KI_LOCK_TRACK *Slot = KiLockTrackFind(KiLockTrack[KeGetCurrentPrcb()->Number], SpinLock);

    if (Slot != NULL)
    {
        Slot->Owner = TRUE;
    }
    x86_restore_flags(Flags);
}

/*
 * Forgets SpinLock (released) and uncounts it. Returns FALSE, changing
 * nothing, when this processor never recorded it (a forged or copied queued
 * handle): the caller bug-checks 0x10. A lock that found the table full is
 * taken on trust while any such lock is outstanding.
 */
BOOLEAN
KiLockTrackRemove(PKSPIN_LOCK SpinLock)
{
    ULONG64 Flags = x86_save_disable();
    PKPRCB Prcb = KeGetCurrentPrcb();
    KI_LOCK_TRACK *Slot = KiLockTrackFind(KiLockTrack[Prcb->Number], SpinLock);
    BOOLEAN Tracked = TRUE;

    if (Slot != NULL)
    {
        __atomic_store_n(&Slot->Lock, NULL, __ATOMIC_RELAXED);
    }
    else if (KiLockTrackOverflow[Prcb->Number] != 0)
    {
        KiLockTrackOverflow[Prcb->Number]--;
    }
    else
    {
        Tracked = FALSE;
    }
    if (Tracked)
    {
        Prcb->SpinLocksHeld--;
    }
    x86_restore_flags(Flags);
    return Tracked;
}

/*
 * The processor that owns SpinLock and where it acquired it, for a deadlock
 * report: the tables first, then (ordinary locks) the owner in the lock word.
 * ~0 when nobody can be named. Reads other processors' tables without a lock.
 */
static ULONG
KiFindLockOwner(PKSPIN_LOCK SpinLock, ULONG_PTR *OwnerRip, ULONG64 *Sequence)
{
    ULONG_PTR Word = __atomic_load_n(SpinLock, __ATOMIC_RELAXED);
    ULONG_PTR First = (ULONG_PTR)&KiProcessorBlock[0];
    ULONG_PTR Last = (ULONG_PTR)&KiProcessorBlock[MAXIMUM_PROCESSORS - 1];

    *OwnerRip = 0;
    *Sequence = Word; // no table names an owner: the word itself stands for the state
    for (ULONG Number = 0; Number < KiActiveProcessorCount; Number++)
    {
        for (ULONG i = 0; i < KI_LOCK_TRACK_SLOTS; i++)
        {
            KI_LOCK_TRACK *Slot = &KiLockTrack[Number][i];
            if (__atomic_load_n(&Slot->Lock, __ATOMIC_ACQUIRE) == SpinLock && Slot->Owner)
            {
                *OwnerRip = Slot->Rip;
                *Sequence = Slot->Sequence;
                return Number;
            }
        }
    }
    if ((Word & 1) != 0 && (Word & ~(ULONG_PTR)1) >= First && (Word & ~(ULONG_PTR)1) <= Last)
    {
        return ((PKPRCB)(Word & ~(ULONG_PTR)1))->Number;
    }
    return ~0U;
}
#endif /* DBG */

/*
 * Checked build: bug-checks SPINDLE_SPIN_LOCK_DEADLOCK once the lock Wait
 * waits for has made no progress for KiSpinLockTimeoutMs. Progress is an
 * acquisition changing hands: each window records which acquisition owns
 * the lock (the owner's lock-table sequence number, else the lock word); when
 * the window ends with another owner, a new window starts instead of a bug
 * check, so a slow but moving system (a loaded host, a long queue) never
 * trips it, and a holder that never lets go does. Called every
 * KI_SPIN_CHECK_INTERVAL spins by KiSpinWaitPause and by KiWaitForChange's
 * watch (also after each halt). Any IRQL.
 */
VOID
KiSpinWaitCheck(KI_SPIN_WAIT *Wait, PKSPIN_LOCK SpinLock, ULONG_PTR WaiterRip)
{
#if DBG
    LARGE_INTEGER Frequency;
    ULONG64 Now = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;
    ULONG_PTR OwnerRip;
    ULONG64 Progress;
    ULONG Owner;

    if (Frequency.QuadPart <= 0)
    {
        return; // the clock is not calibrated yet (early boot)
    }
    if (Wait->Start == 0)
    {
        Wait->Start = Now;
        (void)KiFindLockOwner(SpinLock, &OwnerRip, &Wait->Progress);
        return;
    }
    if (Now - Wait->Start < (ULONG64)Frequency.QuadPart / 1000 * KiSpinLockTimeoutMs)
    {
        return;
    }
    Owner = KiFindLockOwner(SpinLock, &OwnerRip, &Progress);
    if (Progress != Wait->Progress)
    {
        Wait->Progress = Progress; // the lock changed hands: a new window
        Wait->Start = Now;
        return;
    }
    if (!KiBugCheckIsExpected())
    {
        DbgPrint("\n*** spin lock %p: processor %u waited %u ms; owner: processor %d\n",
                 (PVOID)SpinLock, KeGetCurrentPrcb()->Number, KiSpinLockTimeoutMs, (int)Owner);
        KiPrintAddress("***   owner acquired it at ", OwnerRip);
        KiPrintAddress("***   waiter called from   ", WaiterRip);
    }
    KeBugCheckEx(SPINDLE_SPIN_LOCK_DEADLOCK, (ULONG_PTR)SpinLock, Owner, OwnerRip, WaiterRip);
#else
    (void)Wait;
    (void)SpinLock;
    (void)WaiterRip;
#endif
}

/* KiWaitForChange's watch for a lock wait: the deadlock watch above. */
VOID
KiSpinWaitWatchRoutine(KI_WAIT_WATCH *Watch)
{
    KI_SPIN_WAIT *Wait = CONTAINING_RECORD(Watch, KI_SPIN_WAIT, Watch);

    KiSpinWaitCheck(Wait, Wait->SpinLock, Wait->WaiterRip);
}

#if DBG

/* ---------------------------------------------------------------- the order graph */

#define KI_VF_MAX_NODES   2048
#define KI_VF_NODE_HASH   4096 // a power of 2, at least twice KI_VF_MAX_NODES
#define KI_VF_MAX_EDGES   4096
#define KI_VF_EDGE_HASH   8192 // a power of 2, at least twice KI_VF_MAX_EDGES
#define KI_VF_STACK_DEPTH 8
#define KI_VF_NONE        0xffffffffu
#define KI_VF_REPORT_PATH 8    // edges of a cycle printed
#define KI_VF_IRQL_UNREAD 0xff // an IRQL argument not read yet

/* One order A->B: B was taken while A was held. */
typedef struct _KI_VF_EDGE
{
    PKSPIN_LOCK From; // NULL: a free edge
    PKSPIN_LOCK To;
    ULONG NextOut;   // the next out-edge of From, or KI_VF_NONE
    ULONG Processor; // who first took To while holding From
    KIRQL Irql;
    ULONG_PTR FromRip;                  // where From had been acquired
    ULONG_PTR Stack[KI_VF_STACK_DEPTH]; // To's acquisition: the caller of the lock routine first
} KI_VF_EDGE;

/* One lock identity. */
typedef struct _KI_VF_NODE
{
    PKSPIN_LOCK Lock;  // NULL: a free node
    ULONG FirstOut;    // out-edges, or KI_VF_NONE
    ULONG InCount;     // edges pointing here
    ULONG Mark;        // search epoch (under KiVfLock)
    ULONG Parent;      // the edge the search came in by
    KIRQL HighIrql;    // highest IRQL of an acquisition inside an interrupt; 0 = none
    KIRQL ExposedIrql; // lowest IRQL of an acquisition with interrupts on; 0xff = none
    ULONG_PTR HighRip;
    ULONG_PTR ExposedRip;
    ULONG PoolSlot; // its place in KiVfPoolNodes, or KI_VF_NONE (a lock in the image)
} KI_VF_NODE;

/* Locks outside the kernel image (pool, stacks) live below this address. */
#define KI_VF_IMAGE_BASE 0xffffffff80000000ull

BOOLEAN KiVerifierEnabled;
const ULONG KiVfMaxEdges = KI_VF_MAX_EDGES; // for the debugger (spindle-lockorder)
KI_VF_EDGE *KiVfEdges;                      // KI_VF_MAX_EDGES, for the debugger too
KI_VF_NODE *KiVfNodes;                      // KI_VF_MAX_NODES
ULONG KiVfEdgeCount;                        // live edges
ULONG KiVfNodeCount;                        // live nodes
static ULONG *KiVfNodeHash;                 // node index + 1; 0 = empty
static ULONG *KiVfEdgeHash;                 // edge index + 1; 0 = empty
static ULONG *KiVfSearchStack;
static ULONG *KiVfPoolNodes; // the nodes of locks outside the image, for KiVerifierForgetRange
static volatile ULONG KiVfPoolNodeCount;
static ULONG KiVfEpoch;
static volatile ULONG KiVfSequence; // odd while a writer changes the tables
static volatile LONG KiVfLock;
static volatile LONG KiVfHighNodes; // nodes with a HighIrql: the IRQL rule has work
static volatile BOOLEAN KiVfFull;   // a table filled: recording stopped

static inline ULONG
KiVfHash(ULONG_PTR Value)
{
    Value ^= Value >> 29;
    Value *= 0xbf58476d1ce4e5b9ULL;
    Value ^= Value >> 32;
    return (ULONG)Value;
}

static inline ULONG
KiVfPairHash(PKSPIN_LOCK From, PKSPIN_LOCK To)
{
    return KiVfHash((ULONG_PTR)From * 31 + ((ULONG_PTR)To >> 3));
}

/* Takes the verifier's own lock: raw, interrupts off, never verified. Returns RFLAGS. */
static ULONG64
KiVfLockTables(VOID)
{
    ULONG64 Flags = x86_save_disable();

    while (__atomic_exchange_n(&KiVfLock, 1, __ATOMIC_ACQUIRE) != 0)
    {
        while (__atomic_load_n(&KiVfLock, __ATOMIC_RELAXED) != 0)
        {
            x86_pause();
        }
    }
    return Flags;
}

static VOID
KiVfUnlockTables(ULONG64 Flags)
{
    __atomic_store_n(&KiVfLock, 0, __ATOMIC_RELEASE); // pairs with the exchange above
    x86_restore_flags(Flags);
}

/* A writer's change begins: lock-free readers that overlap it retry under the lock. */
static inline VOID
KiVfBeginWrite(VOID)
{
    /* The odd value is visible before any table store (release-ordered on x86 by TSO). */
    __atomic_store_n(&KiVfSequence, KiVfSequence + 1, __ATOMIC_SEQ_CST);
}

static inline VOID
KiVfEndWrite(VOID)
{
    /* Release: the table stores are visible before the even value; pairs with KiVfReadEnd. */
    __atomic_store_n(&KiVfSequence, KiVfSequence + 1, __ATOMIC_RELEASE);
}

/* The node of Lock, or KI_VF_NONE. Under KiVfLock, or inside a read section. */
static ULONG
KiVfFindNode(PKSPIN_LOCK Lock)
{
    for (ULONG i = KiVfHash((ULONG_PTR)Lock), n = 0; n < KI_VF_NODE_HASH; i++, n++)
    {
        ULONG Entry = __atomic_load_n(&KiVfNodeHash[i & (KI_VF_NODE_HASH - 1)], __ATOMIC_RELAXED);
        if (Entry == 0)
        {
            break;
        }
        if (KiVfNodes[Entry - 1].Lock == Lock)
        {
            return Entry - 1;
        }
    }
    return KI_VF_NONE;
}

/* The edge From->To, or KI_VF_NONE. Under KiVfLock, or inside a read section. */
static ULONG
KiVfFindEdge(PKSPIN_LOCK From, PKSPIN_LOCK To)
{
    for (ULONG i = KiVfPairHash(From, To), n = 0; n < KI_VF_EDGE_HASH; i++, n++)
    {
        ULONG Entry = __atomic_load_n(&KiVfEdgeHash[i & (KI_VF_EDGE_HASH - 1)], __ATOMIC_RELAXED);
        if (Entry == 0)
        {
            break;
        }
        if (KiVfEdges[Entry - 1].From == From && KiVfEdges[Entry - 1].To == To)
        {
            return Entry - 1;
        }
    }
    return KI_VF_NONE;
}

/*
 * Lock-free: TRUE if the edge From->To is certainly recorded. FALSE means
 * "not known": look again under the lock.
 */
static BOOLEAN
KiVfEdgeKnown(PKSPIN_LOCK From, PKSPIN_LOCK To)
{
    /* Acquire: pairs with KiVfEndWrite; the table reads below come after. */
    ULONG Sequence = __atomic_load_n(&KiVfSequence, __ATOMIC_ACQUIRE);
    BOOLEAN Found;

    if ((Sequence & 1) != 0)
    {
        return FALSE;
    }
    Found = KiVfFindEdge(From, To) != KI_VF_NONE;
    /* The table reads are complete before the re-read (a load-load order x86 keeps). */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return Found && __atomic_load_n(&KiVfSequence, __ATOMIC_RELAXED) == Sequence;
}

/* Says once that a table filled and stops the verifier recording. Called without KiVfLock. */
static VOID
KiVfReportFull(const char *What)
{
    if (!__atomic_exchange_n(&KiVfFull, TRUE, __ATOMIC_RELAXED))
    {
        DbgPrint("verifier: %s table full; lock-order checking stops here\n", What);
    }
}

/* Removes hash slot Slot by shifting later entries of its run back (linear probing). */
static VOID
KiVfHashDelete(ULONG *Table, ULONG Size, ULONG Slot, ULONG (*HashOf)(ULONG Entry))
{
    ULONG Hole = Slot;

    for (ULONG Next = (Hole + 1) & (Size - 1);; Next = (Next + 1) & (Size - 1))
    {
        ULONG Entry = Table[Next];
        ULONG Home;
        if (Entry == 0)
        {
            break;
        }
        Home = HashOf(Entry) & (Size - 1);
        /* Entry may fill the hole if its home is not cyclically in (Hole, Next]. */
        if (((Next - Home) & (Size - 1)) >= ((Next - Hole) & (Size - 1)))
        {
            Table[Hole] = Entry;
            Hole = Next;
        }
    }
    Table[Hole] = 0;
}

static ULONG
KiVfNodeHashOf(ULONG Entry)
{
    return KiVfHash((ULONG_PTR)KiVfNodes[Entry - 1].Lock);
}

static ULONG
KiVfEdgeHashOf(ULONG Entry)
{
    return KiVfPairHash(KiVfEdges[Entry - 1].From, KiVfEdges[Entry - 1].To);
}

static VOID
KiVfHashRemove(ULONG *Table, ULONG Size, ULONG Hash, ULONG Entry, ULONG (*HashOf)(ULONG))
{
    for (ULONG i = Hash, n = 0; n < Size; i++, n++)
    {
        if (Table[i & (Size - 1)] == Entry)
        {
            KiVfHashDelete(Table, Size, i & (Size - 1), HashOf);
            return;
        }
    }
}

/* The node of Lock, created if missing; KI_VF_NONE when the table is full. Under KiVfLock. */
static ULONG
KiVfGetNode(PKSPIN_LOCK Lock)
{
    ULONG Node = KiVfFindNode(Lock);
    ULONG i;

    if (Node != KI_VF_NONE)
    {
        return Node;
    }
    if (KiVfNodeCount >= KI_VF_MAX_NODES)
    {
        return KI_VF_NONE;
    }
    for (Node = 0; KiVfNodes[Node].Lock != NULL; Node++)
    {
    }
    KiVfNodes[Node] = (KI_VF_NODE){.Lock = Lock,
                                   .FirstOut = KI_VF_NONE,
                                   .InCount = 0,
                                   .Mark = 0,
                                   .Parent = KI_VF_NONE,
                                   .HighIrql = 0,
                                   .ExposedIrql = 0xff,
                                   .PoolSlot = KI_VF_NONE};
    if ((ULONG_PTR)Lock < KI_VF_IMAGE_BASE)
    {
        KiVfNodes[Node].PoolSlot = KiVfPoolNodeCount;
        KiVfPoolNodes[KiVfPoolNodeCount] = Node;
        KiVfPoolNodeCount++;
    }
    for (i = KiVfHash((ULONG_PTR)Lock); KiVfNodeHash[i & (KI_VF_NODE_HASH - 1)] != 0; i++)
    {
    }
    KiVfNodeHash[i & (KI_VF_NODE_HASH - 1)] = Node + 1;
    KiVfNodeCount++;
    return Node;
}

/* Unlinks and frees edge Edge. Under KiVfLock, inside a write. */
static VOID
KiVfDeleteEdge(ULONG Edge)
{
    KI_VF_EDGE *E = &KiVfEdges[Edge];
    ULONG From = KiVfFindNode(E->From);
    ULONG To = KiVfFindNode(E->To);

    if (From != KI_VF_NONE)
    {
        ULONG *Link = &KiVfNodes[From].FirstOut;
        while (*Link != KI_VF_NONE && *Link != Edge)
        {
            Link = &KiVfEdges[*Link].NextOut;
        }
        if (*Link == Edge)
        {
            *Link = E->NextOut;
        }
    }
    if (To != KI_VF_NONE)
    {
        KiVfNodes[To].InCount--;
    }
    KiVfHashRemove(KiVfEdgeHash, KI_VF_EDGE_HASH, KiVfPairHash(E->From, E->To), Edge + 1,
                   KiVfEdgeHashOf);
    E->From = NULL;
    E->To = NULL;
    KiVfEdgeCount--;
}

/* Ends identity Node: its edges both ways, then the node. Under KiVfLock, inside a write. */
static VOID
KiVfDeleteNode(ULONG Node)
{
    KI_VF_NODE *N = &KiVfNodes[Node];

    while (N->FirstOut != KI_VF_NONE)
    {
        KiVfDeleteEdge(N->FirstOut);
    }
    for (ULONG Edge = 0; N->InCount != 0 && Edge < KI_VF_MAX_EDGES; Edge++)
    {
        if (KiVfEdges[Edge].From != NULL && KiVfEdges[Edge].To == N->Lock)
        {
            KiVfDeleteEdge(Edge);
        }
    }
    if (N->HighIrql != 0)
    {
        __atomic_fetch_sub(&KiVfHighNodes, 1, __ATOMIC_RELAXED);
    }
    KiVfHashRemove(KiVfNodeHash, KI_VF_NODE_HASH, KiVfHash((ULONG_PTR)N->Lock), Node + 1,
                   KiVfNodeHashOf);
    if (N->PoolSlot != KI_VF_NONE)
    {
        ULONG Last = KiVfPoolNodes[--KiVfPoolNodeCount];
        KiVfPoolNodes[N->PoolSlot] = Last;
        KiVfNodes[Last].PoolSlot = N->PoolSlot;
    }
    N->Lock = NULL;
    KiVfNodeCount--;
}

/*
 * Searches a path From ->* To through the recorded edges (depth first).
 * Returns TRUE and leaves each visited node's Parent edge set so the path can
 * be walked back from To. Under KiVfLock.
 */
static BOOLEAN
KiVfFindPath(ULONG From, ULONG To)
{
    ULONG Top = 0;

    KiVfEpoch++;
    KiVfNodes[From].Mark = KiVfEpoch;
    KiVfNodes[From].Parent = KI_VF_NONE;
    KiVfSearchStack[Top++] = From;
    while (Top != 0)
    {
        ULONG Node = KiVfSearchStack[--Top];
        for (ULONG Edge = KiVfNodes[Node].FirstOut; Edge != KI_VF_NONE;
             Edge = KiVfEdges[Edge].NextOut)
        {
            ULONG Next = KiVfFindNode(KiVfEdges[Edge].To);
            if (Next == KI_VF_NONE || KiVfNodes[Next].Mark == KiVfEpoch)
            {
                continue;
            }
            KiVfNodes[Next].Mark = KiVfEpoch;
            KiVfNodes[Next].Parent = Edge;
            if (Next == To)
            {
                return TRUE;
            }
            KiVfSearchStack[Top++] = Next; // each node is pushed once: Top < KI_VF_MAX_NODES
        }
    }
    return FALSE;
}

static BOOLEAN
KiVfPlausibleFrame(ULONG_PTR Rbp)
{
    return Rbp % 8 == 0 &&
           (Rbp >= 0xffffffff80000000ULL || (Rbp >= 0x1000 && Rbp < (4ULL << 30) - 16));
}

/*
 * Fills Stack with the return addresses of the current call chain, starting
 * at Rip (the lock routine's caller) when it is found on the chain.
 */
static VOID
KiVfCaptureStack(ULONG_PTR *Stack, ULONG_PTR Rip)
{
    ULONG_PTR Rbp = (ULONG_PTR)__builtin_frame_address(0);
    ULONG Count = 0;
    BOOLEAN Started = FALSE;

    for (ULONG Depth = 0; Depth < 32 && Count < KI_VF_STACK_DEPTH && KiVfPlausibleFrame(Rbp);
         Depth++)
    {
        const ULONG_PTR *Frame = (const ULONG_PTR *)Rbp;
        if (Frame[1] == 0)
        {
            break;
        }
        if (Frame[1] == Rip)
        {
            Started = TRUE;
        }
        if (Started)
        {
            Stack[Count++] = Frame[1];
        }
        if (Frame[0] <= Rbp)
        {
            break;
        }
        Rbp = Frame[0];
    }
    if (!Started)
    {
        Stack[Count++] = Rip; // the lock routine was inlined or the chain is broken
    }
    while (Count < KI_VF_STACK_DEPTH)
    {
        Stack[Count++] = 0;
    }
}

static VOID
KiVfPrintStack(const ULONG_PTR *Stack)
{
    for (ULONG i = 0; i < KI_VF_STACK_DEPTH && Stack[i] != 0; i++)
    {
        char Prefix[24];
        (void)snprintf(Prefix, sizeof(Prefix), "***     #%u ", i); // fits
        KiPrintAddress(Prefix, Stack[i]);
    }
}

/*
 * Reports the cycle that taking Taken while holding Held (this processor,
 * from Rip) would close, the recorded path Taken ->* Held being Report[0..
 * Count) (copied out of the tables), and bug-checks 0xC4/0x1001.
 */
__attribute__((noreturn)) static VOID
KiVfReportCycle(PKSPIN_LOCK Held, ULONG_PTR HeldRip, PKSPIN_LOCK Taken, ULONG_PTR Rip,
                const KI_VF_EDGE *Report, ULONG Count)
{
    ULONG Number = KeGetCurrentPrcb()->Number;

    if (!KiBugCheckIsExpected())
    {
        ULONG_PTR Stack[KI_VF_STACK_DEPTH];

        KiVfCaptureStack(Stack, Rip);
        DbgPrint("\n*** verifier: lock order violation (0xC4/0x1001): a cycle of %u locks\n",
                 Count + 1);
        DbgPrint("*** processor %u takes lock %p while holding lock %p (IRQL %u)\n", Number,
                 (PVOID)Taken, (PVOID)Held, KeGetCurrentIrql());
        KiPrintAddress("***   lock held, acquired at ", HeldRip);
        DbgPrint("***   this acquisition:\n");
        KiVfPrintStack(Stack);
        for (ULONG i = 0; i < Count; i++)
        {
            const KI_VF_EDGE *E = &Report[i];
            DbgPrint("*** recorded order: lock %p then lock %p, processor %u, IRQL %u\n",
                     (PVOID)E->From, (PVOID)E->To, E->Processor, E->Irql);
            KiPrintAddress("***   first lock acquired at ", E->FromRip);
            DbgPrint("***   second lock acquired:\n");
            KiVfPrintStack(E->Stack);
        }
    }
    KeBugCheckEx(DRIVER_VERIFIER_DETECTED_VIOLATION, KI_VERIFIER_LOCK_ORDER, (ULONG_PTR)Taken,
                 (ULONG_PTR)Held, Count != 0 ? Report[Count - 1].Processor : 0);
}

/*
 * Slow path: records Held->Taken, unless Taken ->* Held is recorded, in which
 * case it reports the cycle. Interrupts are off.
 */
static VOID
KiVfAddEdge(PKSPIN_LOCK Held, ULONG_PTR HeldRip, PKSPIN_LOCK Taken, ULONG_PTR Rip)
{
    ULONG64 Flags = KiVfLockTables();
    ULONG From;
    ULONG To;
    ULONG Edge;
    ULONG i;

    if (KiVfFull || KiVfFindEdge(Held, Taken) != KI_VF_NONE)
    {
        KiVfUnlockTables(Flags);
        return;
    }
    KiVfBeginWrite();
    From = KiVfGetNode(Held);
    To = From != KI_VF_NONE ? KiVfGetNode(Taken) : KI_VF_NONE;
    if (To == KI_VF_NONE || KiVfEdgeCount >= KI_VF_MAX_EDGES)
    {
        KiVfEndWrite();
        KiVfUnlockTables(Flags);
        KiVfReportFull(To == KI_VF_NONE ? "lock" : "order");
        return;
    }
    if (KiVfFindPath(To, From))
    {
        /* The path walked back from Held: copy its last KI_VF_REPORT_PATH edges, in order. */
        KI_VF_EDGE Report[KI_VF_REPORT_PATH]; // the cycle, copied out for the report
        ULONG Path[KI_VF_REPORT_PATH] = {0};
        ULONG Count = 0;
        for (ULONG Node = From; KiVfNodes[Node].Parent != KI_VF_NONE;)
        {
            ULONG In = KiVfNodes[Node].Parent;
            if (Count < KI_VF_REPORT_PATH)
            {
                Path[Count++] = In;
            }
            Node = KiVfFindNode(KiVfEdges[In].From);
            if (Node == KI_VF_NONE || Node == To)
            {
                break;
            }
        }
        for (i = 0; i < Count; i++)
        {
            Report[i] = KiVfEdges[Path[Count - 1 - i]];
        }
        KiVfEndWrite();
        KiVfUnlockTables(Flags);
        KiVfReportCycle(Held, HeldRip, Taken, Rip, Report, Count);
    }
    for (Edge = 0; KiVfEdges[Edge].From != NULL; Edge++)
    {
    }
    KiVfEdges[Edge] = (KI_VF_EDGE){.From = Held,
                                   .To = Taken,
                                   .NextOut = KiVfNodes[From].FirstOut,
                                   .Processor = KeGetCurrentPrcb()->Number,
                                   .Irql = KeGetCurrentIrql(),
                                   .FromRip = HeldRip};
    KiVfCaptureStack(KiVfEdges[Edge].Stack, Rip);
    KiVfNodes[From].FirstOut = Edge;
    KiVfNodes[To].InCount++;
    for (i = KiVfPairHash(Held, Taken); KiVfEdgeHash[i & (KI_VF_EDGE_HASH - 1)] != 0; i++)
    {
    }
    KiVfEdgeHash[i & (KI_VF_EDGE_HASH - 1)] = Edge + 1;
    KiVfEdgeCount++;
    KiVfEndWrite();
    KiVfUnlockTables(Flags);
}

/*
 * The IRQL rule for SpinLock taken at Irql (KI_VF_IRQL_UNREAD: read it when
 * needed), inside an interrupt (InInterrupt) or with interrupts on (Exposed).
 * Interrupts are off.
 */
static VOID
// NOLINTNEXTLINE(readability-function-cognitive-complexity): lock-free look, then record, report
KiVfCheckIrql(PKSPIN_LOCK SpinLock, KIRQL Irql, BOOLEAN InInterrupt, BOOLEAN Exposed, ULONG_PTR Rip)
{
    ULONG64 Flags;
    ULONG Node;
    KIRQL High = 0;
    KIRQL Low = 0xff;
    ULONG_PTR HighRip = 0;
    ULONG_PTR LowRip = 0;

    /*
     * Lock-free first look: most acquisitions add nothing (no node and not in
     * an interrupt, or a node that already records this IRQL), and a state
     * that breaks the rule was reported when it was recorded.
     */
    ULONG Sequence = __atomic_load_n(&KiVfSequence, __ATOMIC_ACQUIRE); // pairs with EndWrite
    if ((Sequence & 1) == 0)
    {
        BOOLEAN Nothing;
        Node = KiVfFindNode(SpinLock);
        if (Node == KI_VF_NONE)
        {
            Nothing = !InInterrupt;
        }
        else
        {
            KIRQL KnownHigh = KiVfNodes[Node].HighIrql;
            KIRQL KnownLow = KiVfNodes[Node].ExposedIrql;
            Irql = Irql == KI_VF_IRQL_UNREAD ? KeGetCurrentIrql() : Irql;
            Nothing = !(InInterrupt && Irql > KnownHigh) && !(Exposed && Irql < KnownLow);
        }
        /* The reads above are complete before the re-read (a load-load order x86 keeps). */
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (Nothing && __atomic_load_n(&KiVfSequence, __ATOMIC_RELAXED) == Sequence)
        {
            return;
        }
    }
    Irql = Irql == KI_VF_IRQL_UNREAD ? KeGetCurrentIrql() : Irql;
    Flags = KiVfLockTables();
    Node = InInterrupt ? KiVfGetNode(SpinLock) : KiVfFindNode(SpinLock);
    if (Node == KI_VF_NONE)
    {
        KiVfUnlockTables(Flags);
        if (InInterrupt)
        {
            KiVfReportFull("lock");
        }
        return;
    }
    KiVfBeginWrite();
    if (InInterrupt && Irql > KiVfNodes[Node].HighIrql)
    {
        if (KiVfNodes[Node].HighIrql == 0)
        {
            __atomic_fetch_add(&KiVfHighNodes, 1, __ATOMIC_RELAXED);
        }
        KiVfNodes[Node].HighIrql = Irql;
        KiVfNodes[Node].HighRip = Rip;
    }
    if (Exposed && Irql < KiVfNodes[Node].ExposedIrql)
    {
        KiVfNodes[Node].ExposedIrql = Irql;
        KiVfNodes[Node].ExposedRip = Rip;
    }
    KiVfEndWrite();
    if (KiVfNodes[Node].HighIrql != 0 && KiVfNodes[Node].ExposedIrql < KiVfNodes[Node].HighIrql)
    {
        High = KiVfNodes[Node].HighIrql;
        HighRip = KiVfNodes[Node].HighRip;
        Low = KiVfNodes[Node].ExposedIrql;
        LowRip = KiVfNodes[Node].ExposedRip;
    }
    KiVfUnlockTables(Flags);
    if (High == 0)
    {
        return;
    }
    if (!KiBugCheckIsExpected())
    {
        DbgPrint("\n*** verifier: lock %p is taken by an interrupt at IRQL %u and elsewhere at "
                 "IRQL %u with interrupts on (0xC4/0x1002)\n",
                 (PVOID)SpinLock, High, Low);
        KiPrintAddress("***   inside an interrupt at ", HighRip);
        KiPrintAddress("***   interrupts on at      ", LowRip);
        KiPrintAddress("***   this acquisition at   ", Rip);
    }
    KeBugCheckEx(DRIVER_VERIFIER_DETECTED_VIOLATION, KI_VERIFIER_LOCK_IRQL, (ULONG_PTR)SpinLock,
                 High, Low);
}

VOID
KiVerifierAcquire(PKSPIN_LOCK SpinLock, ULONG_PTR Rip)
{
    ULONG64 Flags;
    PKPRCB Prcb;
    KI_LOCK_TRACK *Slots;
    KIRQL Irql;

    if (!KiVerifierEnabled || KiVfFull || KiBugCheckInProgress())
    {
        return;
    }
    Flags = x86_save_disable();
    Prcb = KeGetCurrentPrcb();
    /* The IRQL (a CR8 read, not cheap under TCG) only when the IRQL rule needs it. */
    Irql = Prcb->InterruptNesting != 0 ? KeGetCurrentIrql() : KI_VF_IRQL_UNREAD;
    if (Irql != KI_VF_IRQL_UNREAD && Irql > DISPATCH_LEVEL)
    {
        KiVfCheckIrql(SpinLock, Irql, TRUE, (Flags & X86_RFLAGS_IF) != 0, Rip);
    }
    else if ((Flags & X86_RFLAGS_IF) != 0 && __atomic_load_n(&KiVfHighNodes, __ATOMIC_RELAXED) != 0)
    {
        KiVfCheckIrql(SpinLock, Irql, FALSE, TRUE, Rip);
    }
    Slots = KiLockTrack[Prcb->Number];
    if (Prcb->SpinLocksHeld != 0)
    {
        for (ULONG i = 0; i < KI_LOCK_TRACK_SLOTS; i++)
        {
            PKSPIN_LOCK Held = Slots[i].Lock;
            if (Held != NULL && Held != SpinLock && !KiVfEdgeKnown(Held, SpinLock))
            {
                KiVfAddEdge(Held, Slots[i].Rip, SpinLock, Rip);
            }
        }
    }
    x86_restore_flags(Flags);
}

BOOLEAN
KiVerifierOrderRecorded(PKSPIN_LOCK From, PKSPIN_LOCK To)
{
    ULONG64 Flags;
    BOOLEAN Recorded;

    if (!KiVerifierEnabled)
    {
        return FALSE;
    }
    Flags = KiVfLockTables();
    Recorded = KiVfFindEdge(From, To) != KI_VF_NONE;
    KiVfUnlockTables(Flags);
    return Recorded;
}

VOID
KiVerifierForgetLock(PKSPIN_LOCK SpinLock)
{
    ULONG64 Flags;
    ULONG Sequence;
    ULONG Node;

    if (!KiVerifierEnabled)
    {
        return;
    }
    /* Lock-free look first: most locks never get a node. Acquire pairs with KiVfEndWrite. */
    Sequence = __atomic_load_n(&KiVfSequence, __ATOMIC_ACQUIRE);
    if ((Sequence & 1) == 0 && KiVfFindNode(SpinLock) == KI_VF_NONE)
    {
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&KiVfSequence, __ATOMIC_RELAXED) == Sequence)
        {
            return;
        }
    }
    Flags = KiVfLockTables();
    Node = KiVfFindNode(SpinLock);
    if (Node != KI_VF_NONE)
    {
        KiVfBeginWrite();
        KiVfDeleteNode(Node);
        KiVfEndWrite();
    }
    KiVfUnlockTables(Flags);
}

VOID
KiVerifierForgetRange(PVOID Base, SIZE_T Length)
{
    ULONG_PTR First = (ULONG_PTR)Base;
    ULONG64 Flags;

    if (!KiVerifierEnabled || __atomic_load_n(&KiVfPoolNodeCount, __ATOMIC_RELAXED) == 0)
    {
        return;
    }
    Flags = KiVfLockTables();
    /* Backwards: deleting a node moves the last entry into its place. */
    for (ULONG i = KiVfPoolNodeCount; i-- != 0;)
    {
        ULONG Node = KiVfPoolNodes[i];
        ULONG_PTR Lock = (ULONG_PTR)KiVfNodes[Node].Lock;
        if (Lock >= First && Lock - First < Length)
        {
            KiVfBeginWrite();
            KiVfDeleteNode(Node);
            KiVfEndWrite();
        }
    }
    KiVfUnlockTables(Flags);
}

/* ---------------------------------------------------------------- fault injection */

BOOLEAN KiInjectEnabled;
volatile ULONG64 KiInjectFired[KiInjectPointCount];
static ULONG64 KiInjectState[MAXIMUM_PROCESSORS]; // xorshift state, per processor

static const char *const KiInjectNames[KiInjectPointCount] = {
    [KiInjectQueuedLockLink] = "queued-lock-link",
    [KiInjectDeviceQueueBusy] = "devqueue-busy-insert",
    [KiInjectCancelBeforeClear] = "cancel-before-clear",
    [KiInjectCancelAfterClear] = "cancel-after-clear",
    [KiInjectStartIoBeforeSet] = "startio-before-set",
    [KiInjectStartIoAfterSet] = "startio-after-set",
    [KiInjectCsqBeforeSet] = "csq-before-set",
    [KiInjectCsqAfterSet] = "csq-after-set",
    [KiInjectCompleteBeforeClaim] = "complete-before-claim",
    [KiInjectCompleteAfterClaim] = "complete-after-claim",
    [KiInjectWaitRecheck] = "wait-before-recheck",
};

/* The name of an injection point, for reports. */
const char *
KiInjectPointName(KI_INJECT_POINT Point)
{
    return (ULONG)Point < KiInjectPointCount ? KiInjectNames[Point] : "?";
}

/*
 * One visit to an injection point: about one visit in four spins a random
 * while (up to ~2000 pauses) and one in sixteen sends an IPI to another
 * processor, so the window the point sits in stays open while others run.
 * Any IRQL; interrupts are left as they are.
 */
VOID
KiInjectFire(KI_INJECT_POINT Point)
{
    ULONG64 Flags = x86_save_disable();
    ULONG Number = KeGetCurrentPrcb()->Number;
    ULONG64 X = KiInjectState[Number];
    ULONG Count = KiActiveProcessorCount;

    X ^= X << 13;
    X ^= X >> 7;
    X ^= X << 17;
    KiInjectState[Number] = X;
    x86_restore_flags(Flags);
    if ((X & 3) != 0 || (ULONG)Point >= KiInjectPointCount)
    {
        return;
    }
    __atomic_fetch_add(&KiInjectFired[Point], 1, __ATOMIC_RELAXED);
    if ((X & 0x30) == 0 && Count > 1)
    {
        ULONG Target = (ULONG)((X >> 8) % (Count - 1));
        Target += Target >= Number ? 1 : 0;
        if (KiGetPrcb(Target)->Online)
        {
            HalSendIpi(KiGetPrcb(Target)->ApicId, KI_VECTOR_IPI);
        }
    }
    for (ULONG Spins = (ULONG)((X >> 16) & 2047); Spins != 0; Spins--)
    {
        x86_pause();
    }
}

/* ---------------------------------------------------------------- start-up */

static ULONG64
KiVfCommandLineNumber(PCSTR CommandLine, const char *Key, ULONG64 Default)
{
    size_t Length;
    const char *Value = cmdline_get(CommandLine, Key, &Length);
    uint64_t Number;

    if (Value == NULL || Length == 0 || !parse_u64(Value, Length, &Number))
    {
        return Default;
    }
    return Number;
}

VOID
KiInitializeVerifier(PCSTR CommandLine)
{
    ULONG64 Seed = KiVfCommandLineNumber(CommandLine, "seed", 1);

    for (ULONG i = 0; i < MAXIMUM_PROCESSORS; i++)
    {
        KiInjectState[i] = (Seed + 1) * 0x9e3779b97f4a7c15ULL + i * 0x2545f4914f6cdd1dULL;
        KiInjectState[i] |= 1;
    }
    KiInjectEnabled = KiVfCommandLineNumber(CommandLine, "inject", 0) != 0;
    if (KiInjectEnabled)
    {
        DbgPrint("verifier: fault injection on (%u points, seed %llu)\n", KiInjectPointCount,
                 (unsigned long long)Seed);
    }
    if (KiVfCommandLineNumber(CommandLine, "verifier", 1) == 0)
    {
        DbgPrint("verifier: lock-order verifier off (verifier=0)\n");
        return;
    }
    KiVfNodes = ExAllocatePoolWithTag(NonPagedPool, sizeof(KI_VF_NODE) * KI_VF_MAX_NODES, 'fVpS');
    KiVfEdges = ExAllocatePoolWithTag(NonPagedPool, sizeof(KI_VF_EDGE) * KI_VF_MAX_EDGES, 'fVpS');
    KiVfNodeHash = ExAllocatePoolWithTag(NonPagedPool, sizeof(ULONG) * KI_VF_NODE_HASH, 'fVpS');
    KiVfEdgeHash = ExAllocatePoolWithTag(NonPagedPool, sizeof(ULONG) * KI_VF_EDGE_HASH, 'fVpS');
    KiVfSearchStack = ExAllocatePoolWithTag(NonPagedPool, sizeof(ULONG) * KI_VF_MAX_NODES, 'fVpS');
    KiVfPoolNodes = ExAllocatePoolWithTag(NonPagedPool, sizeof(ULONG) * KI_VF_MAX_NODES, 'fVpS');
    if (KiVfPoolNodes == NULL || KiVfNodes == NULL || KiVfEdges == NULL || KiVfNodeHash == NULL ||
        KiVfEdgeHash == NULL || KiVfSearchStack == NULL)
    {
        DbgPrint("verifier: no pool for the lock-order tables; the verifier is off\n");
        return;
    }
    memset(KiVfNodes, 0, sizeof(KI_VF_NODE) * KI_VF_MAX_NODES);
    memset(KiVfEdges, 0, sizeof(KI_VF_EDGE) * KI_VF_MAX_EDGES);
    memset(KiVfNodeHash, 0, sizeof(ULONG) * KI_VF_NODE_HASH);
    memset(KiVfEdgeHash, 0, sizeof(ULONG) * KI_VF_EDGE_HASH);
    KiVerifierEnabled = TRUE;
}

#endif /* DBG */
