//! `test-shadow-vars.sh`: `test_klp_shadow_vars.c`'s init function, line for line, over the
//! core's [`ShadowTable`]. Pointers are printed as `PTR<n>`, numbered in order of first
//! appearance as the module's `ptr_id()` does (`PTR0` is NULL).

use crate::expected::*;
use crate::harness::Dmesg;
use livepatch_core::patch::CallbackError;
use livepatch_core::shadow::{ShadowData, ShadowId, ShadowSlot, ShadowTable};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

const MOD_TEST: &str = "test_klp_shadow_vars";
const SV_ID1: ShadowId = ShadowId(0x1234);
const SV_ID2: ShadowId = ShadowId(0x1235);
const NUM_OBJS: usize = 3;

/// A shadow variable holding one pointer (`int **sv`).
#[derive(Default)]
struct Sv(AtomicUsize);

impl ShadowData for Sv {
    fn zero(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

fn addr<T>(r: &T) -> usize {
    r as *const T as usize
}

fn sv_addr(sv: Option<&Sv>) -> usize {
    sv.map_or(0, addr)
}

/// Stand-ins for the module's function pointers (distinct bodies: distinct addresses).
fn shadow_ctor() -> u32 {
    1
}
fn shadow_dtor() -> u32 {
    2
}

/// The module: the kernel's shadow-variable table, `ptr_id()`, and the `pr_info` wrappers.
struct Module<'t> {
    table: ShadowTable<'t, Sv>,
    ids: RefCell<Vec<usize>>,
    dmesg: &'t Dmesg,
}

impl<'t> Module<'t> {
    fn info(&self, line: String) {
        self.dmesg.log(format!("{MOD_TEST}: {line}"));
    }
    /// `ptr_id()`.
    fn ptr(&self, p: usize) -> usize {
        let mut seen = self.ids.borrow_mut();
        seen.iter().position(|&q| q == p).unwrap_or_else(|| {
            seen.push(p);
            seen.len() - 1
        })
    }
    /// `shadow_ctor`: `*sv = *var`.
    fn ctor(&self, var: usize) -> impl FnOnce(usize, &Sv) -> Result<(), CallbackError> + '_ {
        move |_, sv| {
            sv.0.store(var, Ordering::Relaxed);
            self.info(format!("shadow_ctor: PTR{} -> PTR{}", self.ptr(addr(sv)), self.ptr(var)));
            Ok(())
        }
    }
    fn get(&self, obj: usize, id: ShadowId) -> Option<&'t Sv> {
        let sv = self.table.get(obj, id);
        let (o, s) = (self.ptr(obj), self.ptr(sv_addr(sv)));
        self.info(format!("klp_shadow_get(obj=PTR{o}, id={:#x}) = PTR{s}", id.0));
        sv
    }
    fn alloc_line(&self, func: &str, obj: usize, id: ShadowId, var: usize, sv: Option<&Sv>) {
        let (o, c) = (self.ptr(obj), self.ptr(shadow_ctor as fn() -> u32 as usize));
        let (v, s) = (self.ptr(var), self.ptr(sv_addr(sv)));
        self.info(format!(
            "klp_{func}(obj=PTR{o}, id={:#x}, size=8, gfp_flags=GFP_KERNEL), ctor=PTR{c}, ctor_data=PTR{v} = PTR{s}",
            id.0
        ));
    }
    fn alloc(&self, obj: usize, id: ShadowId, var: usize) -> Option<&'t Sv> {
        let sv = self.table.alloc(obj, id, self.ctor(var)).ok();
        self.alloc_line("shadow_alloc", obj, id, var, sv);
        sv
    }
    fn get_or_alloc(&self, obj: usize, id: ShadowId, var: usize) -> Option<&'t Sv> {
        let sv = self.table.get_or_alloc(obj, id, self.ctor(var)).ok();
        self.alloc_line("shadow_get_or_alloc", obj, id, var, sv);
        sv
    }
    fn free(&self, obj: usize, id: ShadowId) {
        let dtor = |obj, sv: &Sv| {
            let (o, s) = (self.ptr(obj), self.ptr(addr(sv)));
            self.info(format!("shadow_dtor(obj=PTR{o}, shadow_data=PTR{s})"));
        };
        self.table.free(obj, id, dtor).expect("allocated");
        let (o, d) = (self.ptr(obj), self.ptr(shadow_dtor as fn() -> u32 as usize));
        self.info(format!("klp_shadow_free(obj=PTR{o}, id={:#x}, dtor=PTR{d})", id.0));
    }
    fn free_all(&self, id: ShadowId) {
        self.table.free_all(id, |_, _| {}); // dtor = NULL
        self.info(format!("klp_shadow_free_all(id={:#x}, dtor=PTR{})", id.0, self.ptr(0)));
    }
    /// `if ((T **)sv == expected && *expected == value) pr_info("  got expected …")`.
    fn check(&self, sv: Option<&Sv>, expected: Option<&Sv>, value: usize) {
        if let (Some(sv), Some(expected)) = (sv, expected) {
            if std::ptr::eq(sv, expected) && expected.0.load(Ordering::Relaxed) == value {
                let (s, v) = (self.ptr(addr(sv)), self.ptr(value));
                self.info(format!("  got expected PTR{s} -> PTR{v} result"));
            }
        }
    }
    fn check_null(&self, sv: Option<&Sv>) {
        if sv.is_none() {
            self.info("  got expected NULL result".into());
        }
    }

    /// `test_klp_shadow_vars_init`.
    fn init(&self) {
        let objs = [[0u64; 1]; NUM_OBJS];
        let nfields1 = [0u8; NUM_OBJS];
        let nfields2 = [0i32; NUM_OBJS];
        let obj = |i: usize| addr(&objs[i]);
        let (mut pnfields1, mut pnfields2) = ([0usize; NUM_OBJS], [0usize; NUM_OBJS]);
        let (mut sv1, mut sv2) = ([None; NUM_OBJS], [None; NUM_OBJS]);

        self.ptr(0);
        // With an empty shadow variable hash table, expect not to find any matches.
        let sv = self.get(obj(0), SV_ID1);
        self.check_null(sv);

        // pass 1: init & alloc a char+int pair of svars for each objs
        for i in 0..NUM_OBJS {
            pnfields1[i] = addr(&nfields1[i]);
            self.ptr(pnfields1[i]);
            sv1[i] = if i % 2 == 1 {
                self.alloc(obj(i), SV_ID1, pnfields1[i])
            } else {
                self.get_or_alloc(obj(i), SV_ID1, pnfields1[i])
            };
            assert!(sv1[i].is_some(), "-ENOMEM");
            pnfields2[i] = addr(&nfields2[i]);
            self.ptr(pnfields2[i]);
            sv2[i] = self.alloc(obj(i), SV_ID2, pnfields2[i]);
            assert!(sv2[i].is_some(), "-ENOMEM");
        }

        // pass 2: verify we find allocated svars and where they point to
        for i in 0..NUM_OBJS {
            let sv = self.get(obj(i), SV_ID1);
            self.check(sv, sv1[i], pnfields1[i]);
            let sv = self.get(obj(i), SV_ID2);
            self.check(sv, sv2[i], pnfields2[i]);
        }

        // pass 3: verify that 'get_or_alloc' returns already allocated svars
        for i in 0..NUM_OBJS {
            let pndup = addr(&nfields1[i]);
            self.ptr(pndup);
            let sv = self.get_or_alloc(obj(i), SV_ID1, pndup);
            self.check(sv, sv1[i], pnfields1[i]);
        }

        // pass 4: free <objs[*], SV_ID1> pairs of svars, verify removal
        for i in 0..NUM_OBJS {
            self.free(obj(i), SV_ID1);
            let sv = self.get(obj(i), SV_ID1);
            self.check_null(sv);
        }

        // pass 5: check we still find <objs[*], SV_ID2> svar pairs
        for i in 0..NUM_OBJS {
            let sv = self.get(obj(i), SV_ID2);
            self.check(sv, sv2[i], pnfields2[i]);
        }

        // pass 6: free all the <objs[*], SV_ID2> svar pairs too.
        self.free_all(SV_ID2);
        for i in 0..NUM_OBJS {
            let sv = self.get(obj(i), SV_ID2);
            self.check_null(sv);
        }
    }
}

#[test]
fn basic_shadow_variable_api() {
    let dmesg = Dmesg::default();
    let slots: Vec<ShadowSlot<Sv>> = (0..16).map(|_| ShadowSlot::default()).collect();
    dmesg.start_test();
    dmesg.log(format!("% insmod test_modules/{MOD_TEST}.ko"));
    let module = Module { table: ShadowTable::new(&slots), ids: RefCell::new(Vec::new()), dmesg: &dmesg };
    module.init();
    assert!(module.table.is_empty());
    dmesg.log(format!("% rmmod {MOD_TEST}"));
    dmesg.check_result(SHADOW_VARS_BASIC_SHADOW_VARIABLE_API, &[("MOD_TEST", MOD_TEST)]);
}
