// cuda_emu.h -- run CUDA __global__ kernels on the CPU, unchanged, for tests and for study.
//
// The generated .cu source is compiled as C++ (g++) after this header. A launch runs every
// block of the grid; the threads of a block run as ucontext fibers on one OS thread, so
//   * __syncthreads() really blocks: a fiber yields to the block scheduler, which resumes
//     the block's fibers only once every live thread has arrived;
//   * __shared__ is per block: it becomes a `static thread_local` variable, and one OS thread
//     runs its blocks one after another (blocks of a grid run in parallel under OpenMP);
//   * warp shuffles, __syncwarp and ballots are warp-wide barriers whose results the
//     scheduler computes once all 32 lanes (or every live lane of a partial warp) arrived.
// A kernel that never synchronises runs in "direct" mode: its threads are plain calls, which
// is much faster. Calling a barrier in direct mode is reported as an error, never ignored.
// Errors (deadlock, divergent barriers, barriers in direct mode) are thrown as
// cuda_emu::Error and returned by the launcher; they never abort the host process.
// Under AddressSanitizer the fiber switches are annotated, so ASan follows the stacks.
#pragma once

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define CUDA_EMU_ASAN 1
#else
#define CUDA_EMU_ASAN 0
#endif

// ---- the CUDA keywords ------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local
#define CUDART_INF_F INFINITY
#define CUDART_NAN_F NAN

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef dim3 uint3;

namespace cuda_emu {

struct Error {
    std::string message;
};

enum class State { Runnable, AtBlockBarrier, AtWarpOp, Done };
enum class WarpOp { None, Sync, Shfl, Ballot };

struct Fiber {
    ucontext_t ctx;
    char* stack = nullptr;  // usable stack (above the guard page)
    size_t stack_size = 0;
    State state = State::Done;
    dim3 tid;
    unsigned linear = 0;
    WarpOp op = WarpOp::None;
    uint64_t value = 0;  // what this lane offers to a shuffle
    int src_lane = 0;    // whose value this lane wants back
    int predicate = 0;   // ballot input
    uint64_t result = 0; // filled by the scheduler when the warp operation completes
    void* fake_stack = nullptr;
    // cp.async (__pipeline_memcpy_async) copies this thread issued and has not waited for yet:
    // they land in shared memory only at __pipeline_wait_prior, as on the GPU, so a kernel
    // that reads a stage before waiting for it reads stale data here too
    struct Copy { void* dst; const void* src; size_t bytes, zfill; };
    std::vector<Copy> copies;
    std::vector<size_t> batches;  // end index in `copies` of every committed batch
};

// What the kernel body sees: threadIdx & co. are macros reading this per-OS-thread record,
// which the scheduler points at the running fiber before each switch.
struct Context {
    dim3 threadIdx, blockIdx, blockDim, gridDim;
};
inline thread_local Context ctx;

typedef void (*Body)(void*);

struct Block {
    // Fibers are allocated once and never moved (a ucontext_t points into itself), reused
    // from block to block on this OS thread; the first `active` run the current block.
    std::vector<Fiber*> pool;
    size_t active = 0;
    ucontext_t scheduler;
    Fiber* current = nullptr;
    bool fiber_mode = false;
    Body body = nullptr;
    void* closure = nullptr;
    bool failed = false;
    std::string error;
    const void* sched_stack_bottom = nullptr;
    size_t sched_stack_size = 0;
};
inline thread_local Block block;

inline size_t stack_bytes() {
    static size_t bytes = [] {
        const char* env = std::getenv("CNNCC_EMU_STACK_KB");
        size_t kb = env ? std::strtoul(env, nullptr, 10) : (CUDA_EMU_ASAN ? 512 : 128);
        return std::max<size_t>(kb, 32) * 1024;
    }();
    return bytes;
}

// A fiber stack with a PROT_NONE guard page below it: an overflow faults instead of
// silently corrupting the neighbour's stack.
inline void allocate_stack(Fiber& f) {
    long page = sysconf(_SC_PAGESIZE);
    size_t size = stack_bytes();
    char* base = static_cast<char*>(mmap(nullptr, size + page, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (base == MAP_FAILED) throw Error{"cuda_emu: cannot map a fiber stack"};
    mprotect(base, page, PROT_NONE);
    f.stack = base + page;
    f.stack_size = size;
    getcontext(&f.ctx);
}

[[noreturn]] inline void fail(const std::string& message) { throw Error{message}; }

inline std::string where() {
    char buf[160];
    std::snprintf(buf, sizeof buf, "block (%u,%u,%u) thread (%u,%u,%u)", ctx.blockIdx.x, ctx.blockIdx.y,
                  ctx.blockIdx.z, ctx.threadIdx.x, ctx.threadIdx.y, ctx.threadIdx.z);
    return buf;
}

// -- switching, annotated for ASan ---------------------------------------------------------
inline void switch_to_fiber(Fiber& f) {
    block.current = &f;
    ctx.threadIdx = f.tid;
#if CUDA_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, f.stack_size);
    swapcontext(&block.scheduler, &f.ctx);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    swapcontext(&block.scheduler, &f.ctx);
#endif
}

inline void yield_to_scheduler(Fiber& f) {
#if CUDA_EMU_ASAN
    __sanitizer_start_switch_fiber(&f.fake_stack, block.sched_stack_bottom, block.sched_stack_size);
    swapcontext(&f.ctx, &block.scheduler);
    __sanitizer_finish_switch_fiber(f.fake_stack, &block.sched_stack_bottom, &block.sched_stack_size);
#else
    swapcontext(&f.ctx, &block.scheduler);
#endif
}

inline void fiber_entry() {
    Fiber& f = *block.current;
#if CUDA_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &block.sched_stack_bottom, &block.sched_stack_size);
#endif
    try {
        block.body(block.closure);
    } catch (const Error& e) {
        if (!block.failed) block.error = e.message;
        block.failed = true;
    }
    f.state = State::Done;
#if CUDA_EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, block.sched_stack_bottom, block.sched_stack_size);
#endif
    setcontext(&block.scheduler);
}

inline Fiber& current_fiber(const char* what) {
    if (!block.fiber_mode)
        fail(std::string("cuda_emu: ") + what + " called by a kernel launched in direct mode (" + where() +
             "); the emulator decided from the source that this kernel never synchronises");
    return *block.current;
}

// Complete every warp whose live lanes all wait at a warp operation; true if any completed.
inline bool release_warps() {
    bool released = false;
    size_t n = block.active;
    for (size_t base = 0; base < n; base += 32) {
        size_t end = std::min(n, base + 32);
        bool waiting = false, all = true;
        for (size_t i = base; i < end; ++i) {
            State s = block.pool[i]->state;
            if (s == State::AtWarpOp) waiting = true;
            else if (s != State::Done) all = false;
        }
        if (!waiting || !all) continue;
        uint64_t ballot = 0;
        for (size_t i = base; i < end; ++i) {
            Fiber& f = *block.pool[i];
            if (f.state == State::AtWarpOp && f.op == WarpOp::Ballot && f.predicate) ballot |= 1ull << (i - base);
        }
        for (size_t i = base; i < end; ++i) {
            Fiber& f = *block.pool[i];
            if (f.state != State::AtWarpOp) continue;
            if (f.op == WarpOp::Shfl) {
                size_t src = base + f.src_lane;
                f.result = (src < end && block.pool[src]->state == State::AtWarpOp) ? block.pool[src]->value : f.value;
            } else if (f.op == WarpOp::Ballot) {
                f.result = ballot;
            }
        }
        for (size_t i = base; i < end; ++i)  // only now: the loop above reads the lanes' states
            if (block.pool[i]->state == State::AtWarpOp) block.pool[i]->state = State::Runnable;
        released = true;
    }
    return released;
}

inline void run_block_fibers() {
    size_t n = block.active;
    for (size_t i = 0; i < n; ++i) {
        Fiber& f = *block.pool[i];
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = f.stack_size;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_entry, 0);
        f.state = State::Runnable;
        f.copies.clear();
        f.batches.clear();
    }
    for (;;) {
        for (size_t i = 0; i < n; ++i)
            if (block.pool[i]->state == State::Runnable) switch_to_fiber(*block.pool[i]);
        if (block.failed) return;
        size_t done = 0, at_barrier = 0;
        for (size_t i = 0; i < n; ++i) {
            done += block.pool[i]->state == State::Done;
            at_barrier += block.pool[i]->state == State::AtBlockBarrier;
        }
        if (done == n) return;
        if (release_warps()) continue;
        if (at_barrier + done == n) {
            for (size_t i = 0; i < n; ++i)
                if (block.pool[i]->state == State::AtBlockBarrier) block.pool[i]->state = State::Runnable;
            continue;
        }
        // Some threads wait at __syncthreads, others at a warp operation that cannot complete
        // (its warp mates are at the block barrier): divergent synchronisation.
        char buf[200];
        std::snprintf(buf, sizeof buf,
                      "cuda_emu: deadlock in block (%u,%u,%u): %zu threads at __syncthreads, %zu at warp "
                      "operations whose warp mates never arrive (divergent barrier)",
                      ctx.blockIdx.x, ctx.blockIdx.y, ctx.blockIdx.z, at_barrier, n - done - at_barrier);
        block.failed = true;
        block.error = buf;
        return;
    }
}

inline void run_block(dim3 bid, dim3 grid, dim3 bdim, bool fibers, Body body, void* closure) {
    ctx.blockIdx = bid;
    ctx.gridDim = grid;
    ctx.blockDim = bdim;
    block.fiber_mode = fibers;
    block.body = body;
    block.closure = closure;
    block.failed = false;
    unsigned count = bdim.x * bdim.y * bdim.z;
    if (!fibers) {
        for (unsigned z = 0; z < bdim.z; ++z)
            for (unsigned y = 0; y < bdim.y; ++y)
                for (unsigned x = 0; x < bdim.x; ++x) {
                    ctx.threadIdx = dim3(x, y, z);
                    body(closure);
                }
        return;
    }
    while (block.pool.size() < count) {
        Fiber* f = new Fiber();
        allocate_stack(*f);
        block.pool.push_back(f);
    }
    block.active = count;
    unsigned i = 0;
    for (unsigned z = 0; z < bdim.z; ++z)
        for (unsigned y = 0; y < bdim.y; ++y)
            for (unsigned x = 0; x < bdim.x; ++x, ++i) {
                block.pool[i]->tid = dim3(x, y, z);
                block.pool[i]->linear = i;
            }
    run_block_fibers();
    if (block.failed) throw Error{block.error};
}

// Runs the grid; returns the first error (empty string when all blocks succeeded).
inline std::string run_grid(dim3 grid, dim3 bdim, bool fibers, Body body, void* closure) {
    long total = long(grid.x) * grid.y * grid.z;
    std::string first_error;
    bool failed = false;
#pragma omp parallel for schedule(dynamic, 1)
    for (long b = 0; b < total; ++b) {
        bool skip;
#pragma omp atomic read
        skip = failed;
        if (skip) continue;
        dim3 bid(unsigned(b % grid.x), unsigned((b / grid.x) % grid.y), unsigned(b / (long(grid.x) * grid.y)));
        try {
            run_block(bid, grid, bdim, fibers, body, closure);
        } catch (const Error& e) {
#pragma omp critical(cuda_emu_error)
            {
                if (!failed) first_error = e.message;
                failed = true;
            }
        }
    }
    return first_error;
}

template <class T>
using Param = typename std::remove_cv<typename std::remove_reference<T>::type>::type;

template <class... A, size_t... I>
inline void call_with(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<Param<A>*>(args[I])...);
}

template <class... A>
struct Launch {
    void (*kernel)(A...);
    void** args;
    static void body(void* self) {
        auto* l = static_cast<Launch*>(self);
        call_with(l->kernel, l->args, std::index_sequence_for<A...>{});
    }
};

template <class... A>
inline std::string launch(void (*kernel)(A...), dim3 grid, dim3 bdim, void** args, bool fibers) {
    if (bdim.x * bdim.y * bdim.z > 1024) return "cuda_emu: more than 1024 threads per block";
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || bdim.x == 0 || bdim.y == 0 || bdim.z == 0)
        return "cuda_emu: empty grid or block";
    Launch<A...> l{kernel, args};
    return run_grid(grid, bdim, fibers, &Launch<A...>::body, &l);
}

// One character per parameter so the host can check what it passes: p pointer, i/u signed or
// unsigned integer, f float, followed by the size in bytes ("p8 i4 f4").
template <class T>
inline std::string param_code() {
    using P = Param<T>;
    char kind = std::is_pointer<P>::value ? 'p' : std::is_floating_point<P>::value ? 'f'
              : std::is_signed<P>::value ? 'i' : 'u';
    return kind + std::to_string(sizeof(P));
}

template <class... A>
inline std::string signature(void (*)(A...)) {
    std::string s;
    ((s += (s.empty() ? "" : " ") + param_code<A>()), ...);
    return s;
}

// -- warp operations -------------------------------------------------------------------------
inline uint64_t warp_op(WarpOp op, uint64_t value, int src_lane, int predicate, const char* what) {
    Fiber& f = current_fiber(what);
    f.op = op;
    f.value = value;
    f.src_lane = src_lane;
    f.predicate = predicate;
    f.state = State::AtWarpOp;
    yield_to_scheduler(f);
    return f.result;
}

template <class T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
}

template <class T>
inline T from_bits(uint64_t bits) {
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}

inline int lane_id() { return int(block.current->linear % 32); }

}  // namespace cuda_emu

#define threadIdx (static_cast<const dim3&>(::cuda_emu::ctx.threadIdx))
#define blockIdx (static_cast<const dim3&>(::cuda_emu::ctx.blockIdx))
#define blockDim (static_cast<const dim3&>(::cuda_emu::ctx.blockDim))
#define gridDim (static_cast<const dim3&>(::cuda_emu::ctx.gridDim))
#define warpSize 32

inline void __syncthreads() {
    cuda_emu::Fiber& f = cuda_emu::current_fiber("__syncthreads");
    f.state = cuda_emu::State::AtBlockBarrier;
    cuda_emu::yield_to_scheduler(f);
}

inline void __syncwarp(unsigned = 0xffffffffu) {
    cuda_emu::warp_op(cuda_emu::WarpOp::Sync, 0, 0, 0, "__syncwarp");
}

template <class T>
inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
    int lane = cuda_emu::current_fiber("__shfl_sync").linear % 32;
    int from = (lane & ~(width - 1)) + (src & (width - 1));
    return cuda_emu::from_bits<T>(cuda_emu::warp_op(cuda_emu::WarpOp::Shfl, cuda_emu::to_bits(v), from, 0, "__shfl_sync"));
}

template <class T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
    int lane = cuda_emu::current_fiber("__shfl_down_sync").linear % 32;
    int from = lane + int(delta);
    if (from >= (lane & ~(width - 1)) + width) from = lane;
    return cuda_emu::from_bits<T>(cuda_emu::warp_op(cuda_emu::WarpOp::Shfl, cuda_emu::to_bits(v), from, 0, "__shfl_down_sync"));
}

template <class T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
    int lane = cuda_emu::current_fiber("__shfl_up_sync").linear % 32;
    int from = lane - int(delta);
    if (from < (lane & ~(width - 1))) from = lane;
    return cuda_emu::from_bits<T>(cuda_emu::warp_op(cuda_emu::WarpOp::Shfl, cuda_emu::to_bits(v), from, 0, "__shfl_up_sync"));
}

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
    int lane = cuda_emu::current_fiber("__shfl_xor_sync").linear % 32;
    int from = lane ^ mask;
    if (from >= (lane & ~(width - 1)) + width) from = lane;
    return cuda_emu::from_bits<T>(cuda_emu::warp_op(cuda_emu::WarpOp::Shfl, cuda_emu::to_bits(v), from, 0, "__shfl_xor_sync"));
}

inline unsigned __ballot_sync(unsigned, int predicate) {
    return unsigned(cuda_emu::warp_op(cuda_emu::WarpOp::Ballot, 0, 0, predicate != 0, "__ballot_sync"));
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned, int predicate) {
    return cuda_emu::warp_op(cuda_emu::WarpOp::Ballot, 0, 0, predicate == 0, "__all_sync") == 0;
}

// ---- atomics: fibers of one block never preempt each other, but blocks run on several OS threads
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline float atomicAdd(float* p, float v) {
    uint32_t* bits = reinterpret_cast<uint32_t*>(p);
    uint32_t old = __atomic_load_n(bits, __ATOMIC_RELAXED), updated;
    do {
        float f;
        std::memcpy(&f, &old, 4);
        f += v;
        std::memcpy(&updated, &f, 4);
    } while (!__atomic_compare_exchange_n(bits, &old, updated, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    float f;
    std::memcpy(&f, &old, 4);
    return f;
}
inline int atomicMax(int* p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return old;
}
inline int atomicMin(int* p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return old;
}
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline int atomicCAS(int* p, int expected, int desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return expected;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long expected, unsigned long long desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return expected;
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- math intrinsics and device helpers ----------------------------------------------------
template <class T>
inline T __ldg(const T* p) { return *p; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __tanhf(float x) { return std::tanh(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline int __float2int_rn(float x) { return int(std::nearbyint(x)); }
inline int __float2int_rd(float x) { return int(std::floor(x)); }
inline int __float2int_rz(float x) { return int(x); }
inline float __int2float_rn(int x) { return float(x); }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned i) { float x; std::memcpy(&x, &i, 4); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __mul24(int a, int b) { return a * b; }
inline int __umul24(unsigned a, unsigned b) { return int(a * b); }

// CUDA's overloaded device min/max (integers and floats, the float ones like fminf/fmaxf)
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

// ---- cp.async through the cuda_pipeline.h primitives -----------------------------------------
// Each copy is queued on the issuing thread and performed at __pipeline_wait_prior (copies
// outside a fiber, which has no pipeline to wait on, land at once). Alignment is checked like
// the hardware does: 4, 8 or 16 bytes, both addresses aligned to the size.
namespace cuda_emu {
inline void perform(const Fiber::Copy& c) {
    std::memcpy(c.dst, c.src, c.bytes - c.zfill);
    std::memset(static_cast<char*>(c.dst) + (c.bytes - c.zfill), 0, c.zfill);
}
}  // namespace cuda_emu

inline void __pipeline_memcpy_async(void* dst, const void* src, size_t bytes, size_t zfill = 0) {
    if ((bytes != 4 && bytes != 8 && bytes != 16) || zfill > bytes)
        cuda_emu::fail("cuda_emu: __pipeline_memcpy_async of " + std::to_string(bytes) + " bytes (zfill " +
                       std::to_string(zfill) + ") at " + cuda_emu::where() + "; cp.async copies 4, 8 or 16");
    if (reinterpret_cast<uintptr_t>(dst) % bytes || (zfill < bytes && reinterpret_cast<uintptr_t>(src) % bytes))
        cuda_emu::fail("cuda_emu: misaligned " + std::to_string(bytes) + "-byte cp.async at " + cuda_emu::where());
    cuda_emu::Fiber::Copy c{dst, src, bytes, zfill};
    if (!cuda_emu::block.fiber_mode) { cuda_emu::perform(c); return; }
    cuda_emu::block.current->copies.push_back(c);
}
inline void __pipeline_commit() {
    if (!cuda_emu::block.fiber_mode) return;
    cuda_emu::Fiber& f = *cuda_emu::block.current;
    f.batches.push_back(f.copies.size());
}
inline void __pipeline_wait_prior(size_t prior) {
    if (!cuda_emu::block.fiber_mode) return;
    cuda_emu::Fiber& f = *cuda_emu::block.current;
    if (f.batches.size() <= prior) return;
    size_t done = f.batches[f.batches.size() - 1 - prior];  // every copy of the older batches
    for (size_t i = 0; i < done; ++i) cuda_emu::perform(f.copies[i]);
    f.copies.erase(f.copies.begin(), f.copies.begin() + done);
    f.batches.erase(f.batches.begin(), f.batches.end() - prior);
    for (size_t& b : f.batches) b -= done;
}

// ---- half and bfloat16 (cuda_fp16.h, cuda_bf16.h): storage types, round-to-nearest-even ---------
struct __half { unsigned short __x; };
struct __nv_bfloat16 { unsigned short __x; };

namespace cuda_emu {
inline uint32_t bits_of(float f) { uint32_t x; std::memcpy(&x, &f, 4); return x; }
inline float float_of(uint32_t x) { float f; std::memcpy(&f, &x, 4); return f; }

inline unsigned short float_to_half_bits(float f) {
    uint32_t x = bits_of(f);
    uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) return sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u);  // inf, nan
    if (a >= 0x477ff000u) return sign | 0x7c00u;           // rounds past 65504: inf
    if (a < 0x38800000u) {                                  // below 2^-14: a subnormal half (or 0)
        float scaled = float_of(a) * 16777216.0f;           // in units of 2^-24, exact
        return sign | static_cast<unsigned short>(std::nearbyint(scaled));   // ties to even
    }
    uint32_t h = ((((a >> 23) - 127 + 15) << 10) | ((a & 0x7fffffu) >> 13));
    uint32_t rest = a & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // carries into the exponent correctly
    return static_cast<unsigned short>(sign | h);
}

inline float half_bits_to_float(unsigned short h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) return (sign ? -1.0f : 1.0f) * float(m) * (1.0f / 16777216.0f);
    if (e == 31) return float_of(sign | 0x7f800000u | (m << 13));
    return float_of(sign | ((e - 15 + 127) << 23) | (m << 13));
}

inline unsigned short float_to_bf16_bits(float f) {
    uint32_t x = bits_of(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<unsigned short>((x >> 16) | 0x40u);  // quiet nan
    return static_cast<unsigned short>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// TF32: 10 explicit mantissa bits. cvt.rna.tf32.f32 rounds to nearest, ties away from zero;
// the tensor core itself ignores the low 13 bits of a float operand (truncation).
inline float round_tf32(float f) {
    uint32_t x = bits_of(f);
    if ((x & 0x7f800000u) == 0x7f800000u) return f;
    return float_of((x + 0x1000u) & 0xffffe000u);
}
inline float truncate_tf32(float f) {
    uint32_t x = bits_of(f);
    return (x & 0x7f800000u) == 0x7f800000u ? f : float_of(x & 0xffffe000u);
}
}  // namespace cuda_emu

inline __half __float2half_rn(float f) { return __half{cuda_emu::float_to_half_bits(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __half2float(__half h) { return cuda_emu::half_bits_to_float(h.__x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{cuda_emu::float_to_bf16_bits(f)}; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return cuda_emu::float_of(uint32_t(b.__x) << 16); }

// ---- WMMA (mma.h): whole-tile semantics --------------------------------------------------------
// On the GPU a fragment is spread over the 32 lanes of a warp in an unspecified layout. Here
// every lane holds the whole tile (x[] in row-major order of the logical matrix, num_elements
// = rows * cols), so load/store/mma_sync give the documented results and an element-wise loop
// over x[0..num_elements) (e.g. __float_to_tf32) touches every element exactly once per lane,
// as it does across the warp on the GPU. Pointers must be 256-bit aligned, as mma.h requires.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision { struct tf32 {}; }
enum layout_t { mem_row_major, mem_col_major };

template <class T> struct storage { using type = T; };
template <> struct storage<precision::tf32> { using type = float; };

template <class Use, int M, int N, int K> struct extent;
template <int M, int N, int K> struct extent<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct extent<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct extent<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    using element_type = T;
    using storage_element_type = typename storage<T>::type;
    static constexpr int rows = extent<Use, M, N, K>::rows, cols = extent<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols;
    storage_element_type x[num_elements];
};

inline float __float_to_tf32(float f) { return cuda_emu::round_tf32(f); }

template <class E> inline float as_float(E v) { return float(v); }
template <> inline float as_float<__half>(__half v) { return __half2float(v); }
template <> inline float as_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

inline void check_tile(const void* p, unsigned ldm, size_t elem, const char* what) {
    if (reinterpret_cast<uintptr_t>(p) % 32)
        cuda_emu::fail(std::string("cuda_emu: ") + what + " with a pointer not 256-bit aligned at " + cuda_emu::where());
    if ((ldm * elem) % 16)
        cuda_emu::fail(std::string("cuda_emu: ") + what + " with ldm " + std::to_string(ldm) +
                       " not a multiple of 16 bytes at " + cuda_emu::where());
}

template <class Use, int M, int N, int K, class T, class Layout, class P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const P* p, unsigned ldm) {
    using F = fragment<Use, M, N, K, T, Layout>;
    static_assert(!std::is_same<Layout, void>::value, "an operand fragment needs its layout");
    check_tile(p, ldm, sizeof(P), "load_matrix_sync");
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c)
            f.x[r * F::cols + c] = std::is_same<Layout, row_major>::value ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r];
}

template <int M, int N, int K, class T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t layout) {
    check_tile(p, ldm, sizeof(T), "load_matrix_sync");
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c)
            f.x[r * N + c] = layout == mem_row_major ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r];
}

template <int M, int N, int K, class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout) {
    check_tile(p, ldm, sizeof(T), "store_matrix_sync");
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c)
            (layout == mem_row_major ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r]) = f.x[r * N + c];
}

template <class Use, int M, int N, int K, class T, class Layout, class V>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const V& v) {
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}

// D = A * B + C with FP32 accumulation: products of TF32/FP16/BF16 operands are exact in FP32,
// summed in k order; TF32 operands lose their low 13 bits as on the tensor core.
template <int M, int N, int K, class T, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
                     const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
    float av[M * K], bv[K * N], out[M * N];
    for (int i = 0; i < M * K; ++i) {
        av[i] = as_float(a.x[i]);
        if (std::is_same<T, precision::tf32>::value) av[i] = cuda_emu::truncate_tf32(av[i]);
    }
    for (int i = 0; i < K * N; ++i) {
        bv[i] = as_float(b.x[i]);
        if (std::is_same<T, precision::tf32>::value) bv[i] = cuda_emu::truncate_tf32(bv[i]);
    }
    std::memcpy(out, c.x, sizeof out);
    for (int r = 0; r < M; ++r)           // each out[r][col] still sums its products in k order
        for (int k = 0; k < K; ++k)
            for (int col = 0; col < N; ++col) out[r * N + col] += av[r * K + k] * bv[k * N + col];
    std::memcpy(d.x, out, sizeof out);
}
}  // namespace wmma
}  // namespace nvcuda
