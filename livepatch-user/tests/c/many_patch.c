/* Variants of many.c's 64 functions (same results). */
#include "livepatch_user.h"
#define H(n) int hv##n(int x) { return x + n; }
#define H8(n) H(n##0) H(n##1) H(n##2) H(n##3) H(n##4) H(n##5) H(n##6) H(n##7)
H8(1) H8(2) H8(3) H8(4) H8(5) H8(6) H8(7) H8(8)
#define F(n) {"h" #n, (void *)hv##n},
#define F8(n) F(n##0) F(n##1) F(n##2) F(n##3) F(n##4) F(n##5) F(n##6) F(n##7)
#ifdef ONLY /* a patch of the one function h<ONLY> */
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define STR2(a) #a
#define STR(a) STR2(a)
static const struct livepatch_func funcs[] = {{"h" STR(ONLY), (void *)CAT(hv, ONLY)}};
#else
static const struct livepatch_func funcs[] = {F8(1) F8(2) F8(3) F8(4) F8(5) F8(6) F8(7) F8(8)};
#endif
const struct livepatch_patch livepatch_patch = {
    .abi = LIVEPATCH_ABI,
    .name = "many",
    .nfuncs = sizeof funcs / sizeof funcs[0],
    .funcs = funcs,
};
