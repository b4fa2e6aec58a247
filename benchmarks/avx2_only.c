/* LD_PRELOAD library: the process sees its CPU without AVX-512 and VNNI (built and preloaded
   by avx2_only.py, which says why).

   Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, Linux >= 4.12, CPUs flagged
   `cpuid_fault` in /proc/cpuinfo) turns every later `cpuid` into SIGSEGV; the handler runs the
   instruction with faulting briefly off, clears the feature bits below and steps over it.
   Libraries that detect features after this library loads (LLVM for Numba, XNNPACK's
   cpuinfo, NumPy, OpenBLAS) then take their AVX2 code, as on an AVX2-only CPU. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

/* CPUID.(EAX=7,ECX=0).EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
#define LEAF7_EBX_AVX512 ((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | \
                          (1u << 28) | (1u << 30) | (1u << 31))
/* .ECX: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
#define LEAF7_ECX_AVX512 ((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14))
/* .EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, FP16 23, AMX-TILE 24, AMX-INT8 25 */
#define LEAF7_EDX_AVX512 ((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | \
                          (1u << 24) | (1u << 25))
/* CPUID.(EAX=7,ECX=1).EAX: AVX-VNNI 4, AVX512_BF16 5 */
#define LEAF7_1_EAX_VNNI ((1u << 4) | (1u << 5))

static int set_cpuid_faulting(int on) {
    return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1);
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *reg = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)reg[REG_RIP];
    (void)info;
    if (ip[0] != 0x0f || ip[1] != 0xa2) {  /* a real fault: let it kill the process */
        signal(sig, SIG_DFL);
        return;
    }
    unsigned leaf = (unsigned)reg[REG_RAX], sub = (unsigned)reg[REG_RCX];
    unsigned a, b, c, d;
    set_cpuid_faulting(0);
    __cpuid_count(leaf, sub, a, b, c, d);
    set_cpuid_faulting(1);
    if (leaf == 7 && sub == 0) {
        b &= ~LEAF7_EBX_AVX512;
        c &= ~LEAF7_ECX_AVX512;
        d &= ~LEAF7_EDX_AVX512;
    } else if (leaf == 7 && sub == 1) {
        a &= ~LEAF7_1_EAX_VNNI;
    }
    reg[REG_RAX] = a;
    reg[REG_RBX] = b;
    reg[REG_RCX] = c;
    reg[REG_RDX] = d;
    reg[REG_RIP] += 2;
}

__attribute__((constructor)) static void install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &action, NULL);
    if (set_cpuid_faulting(1) != 0) {
        fprintf(stderr, "avx2_only: this kernel or CPU has no CPUID faulting\n");
        exit(2);
    }
}
