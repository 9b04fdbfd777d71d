/* tests/longjmp_decision.rs: a loop calling a hooked function, and a SIGUSR1 handler of the
 * program's own that leaves it with siglongjmp when it finds it interrupted a hook decision
 * (the trampoline's call of the decision live on the stack, the pc not in the trampoline) --
 * what a SIGALRM timeout or a SIGSEGV probe does to the code it interrupts. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <ucontext.h>
#include <unistd.h>

static sigjmp_buf env;
/* Set by the test: the return address of the trampoline's call of the decision, the
 * trampoline's address, the worker's base frame (the top of the scan of its stack). */
static atomic_ulong decide_ret, trampoline, base;
static atomic_int armed, park;
static atomic_long jumps, handled;

void lj_setup(unsigned long ret, unsigned long tramp, unsigned long b) {
    atomic_store(&decide_ret, ret);
    atomic_store(&trampoline, tramp);
    atomic_store(&base, b);
}

void lj_arm(void) { atomic_store(&armed, 1); }
/* While set, the loop sleeps after a jump instead of calling f (a thread blocked elsewhere). */
void lj_park(int on) { atomic_store(&park, on); }
long lj_jumps(void) { return atomic_load(&jumps); }
long lj_handled(void) { return atomic_load(&handled); }

void lj_on_usr1(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)si;
    ucontext_t *uc = ctx;
    uintptr_t pc = uc->uc_mcontext.gregs[REG_RIP], sp = uc->uc_mcontext.gregs[REG_RSP];
    uintptr_t t0 = atomic_load(&trampoline), b = atomic_load(&base), ret = atomic_load(&decide_ret);
    int in_decision = 0;
    if (!(pc >= t0 && pc < t0 + 256) && sp < b && !(sp & 7))
        for (uintptr_t w = sp; w < b; w += 8)
            if (*(volatile uintptr_t *)w == ret) {
                in_decision = 1;
                break;
            }
    if (in_decision && atomic_exchange(&armed, 0)) {
        atomic_fetch_add(&jumps, 1);
        siglongjmp(env, 1);
    }
    atomic_fetch_add(&handled, 1);
}

/* Calls f until *stop; a siglongjmp out of the handler lands here and the loop goes on, after
 * sleeping while parked. */
long lj_run(int (*f)(int), atomic_int *stop) {
    static volatile long sum;
    static volatile int i;
    if (sigsetjmp(env, 1))
        while (atomic_load(&park) && !atomic_load_explicit(stop, memory_order_relaxed))
            usleep(200);
    while (!atomic_load_explicit(stop, memory_order_relaxed)) {
        sum += f(i);
        i = (i + 1) & 0xffff;
    }
    return sum;
}
