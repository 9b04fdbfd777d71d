//! Shadow variables against a `HashMap` reference: random alloc / get / get-or-alloc / free /
//! free-all / reclaim sequences, including constructor failures and a full table.

use livepatch_core::patch::CallbackError;
use livepatch_core::shadow::{ShadowData, ShadowError, ShadowId, ShadowSlot, ShadowTable};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Default)]
struct Value(AtomicUsize);

impl ShadowData for Value {
    fn zero(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc { obj: usize, id: u32, value: usize, fail: bool },
    GetOrAlloc { obj: usize, id: u32, value: usize },
    Get { obj: usize, id: u32 },
    Free { obj: usize, id: u32 },
    FreeAll { id: u32 },
    Reclaim,
}

fn op() -> impl Strategy<Value = Op> {
    let obj = 0usize..6;
    let id = 0u32..3;
    prop_oneof![
        (obj.clone(), id.clone(), 1usize..100, proptest::bool::weighted(0.2))
            .prop_map(|(obj, id, value, fail)| Op::Alloc { obj, id, value, fail }),
        (obj.clone(), id.clone(), 1usize..100).prop_map(|(obj, id, value)| Op::GetOrAlloc { obj, id, value }),
        (obj.clone(), id.clone()).prop_map(|(obj, id)| Op::Get { obj, id }),
        (obj, id.clone()).prop_map(|(obj, id)| Op::Free { obj, id }),
        id.prop_map(|id| Op::FreeAll { id }),
        Just(Op::Reclaim),
    ]
}

proptest! {
    #[test]
    fn shadow_table_matches_a_map(ops in proptest::collection::vec(op(), 1..60)) {
        const SLOTS: usize = 8;
        let slots: Vec<ShadowSlot<Value>> = (0..SLOTS).map(|_| ShadowSlot::default()).collect();
        let table = ShadowTable::new(&slots);
        let mut live: HashMap<(usize, u32), usize> = HashMap::new();
        let mut retired = 0usize;
        for op in ops {
            match op {
                Op::Alloc { obj, id, value, fail } => {
                    let got = table.alloc(obj, ShadowId(id), |_, d| {
                        assert_eq!(d.0.load(Ordering::Relaxed), 0, "zeroed before the constructor");
                        d.0.store(value, Ordering::Relaxed);
                        if fail { Err(CallbackError(-1)) } else { Ok(()) }
                    });
                    let expect = if live.contains_key(&(obj, id)) {
                        Err(ShadowError::Exists)
                    } else if live.len() + retired == SLOTS {
                        Err(ShadowError::Full)
                    } else if fail {
                        Err(ShadowError::Constructor(CallbackError(-1)))
                    } else {
                        live.insert((obj, id), value);
                        Ok(value)
                    };
                    prop_assert_eq!(got.map(|d| d.0.load(Ordering::Relaxed)), expect);
                }
                Op::GetOrAlloc { obj, id, value } => {
                    let got = table.get_or_alloc(obj, ShadowId(id), |_, d| {
                        d.0.store(value, Ordering::Relaxed);
                        Ok(())
                    });
                    let expect = match live.get(&(obj, id)) {
                        Some(v) => Ok(*v),
                        None if live.len() + retired == SLOTS => Err(ShadowError::Full),
                        None => {
                            live.insert((obj, id), value);
                            Ok(value)
                        }
                    };
                    prop_assert_eq!(got.map(|d| d.0.load(Ordering::Relaxed)), expect);
                }
                Op::Get { obj, id } => {
                    let got = table.get(obj, ShadowId(id)).map(|d| d.0.load(Ordering::Relaxed));
                    prop_assert_eq!(got, live.get(&(obj, id)).copied());
                }
                Op::Free { obj, id } => {
                    let mut seen = None;
                    let got = table.free(obj, ShadowId(id), |o, d| seen = Some((o, d.0.load(Ordering::Relaxed))));
                    match live.remove(&(obj, id)) {
                        Some(v) => {
                            prop_assert_eq!(got, Ok(()));
                            prop_assert_eq!(seen, Some((obj, v)));
                            retired += 1;
                        }
                        None => prop_assert_eq!(got, Err(ShadowError::NotFound)),
                    }
                }
                Op::FreeAll { id } => {
                    let mut seen = Vec::new();
                    let n = table.free_all(ShadowId(id), |o, _| seen.push(o));
                    let mut expect: Vec<usize> = live.keys().filter(|k| k.1 == id).map(|k| k.0).collect();
                    live.retain(|k, _| k.1 != id);
                    expect.sort();
                    seen.sort();
                    prop_assert_eq!(n, expect.len());
                    prop_assert_eq!(seen, expect);
                    retired += n;
                }
                Op::Reclaim => {
                    let mut graces = 0;
                    prop_assert_eq!(table.reclaim(|| graces += 1), retired);
                    prop_assert_eq!(graces, usize::from(retired > 0));
                    retired = 0;
                }
            }
            prop_assert_eq!(table.len(), live.len());
        }
    }
}

/// The kernel's `test_klp_shadow_vars` selftest, step by step: three objects, two ids,
/// constructor and destructor calls counted.
#[test]
fn kernel_shadow_selftest_parity() {
    use std::cell::Cell;
    const ID1: ShadowId = ShadowId(1234);
    const ID2: ShadowId = ShadowId(1235);
    let (obj1, obj2, obj3) = (0x1000usize, 0x2000usize, 0x3000usize);
    let slots: Vec<ShadowSlot<Value>> = (0..16).map(|_| ShadowSlot::default()).collect();
    let table = ShadowTable::new(&slots);
    let ctors = Cell::new(0);
    let dtors = Cell::new(0);
    let ctor = |value: usize| {
        let ctors = &ctors;
        move |_: usize, d: &Value| {
            ctors.set(ctors.get() + 1);
            d.0.store(value, Ordering::Relaxed);
            Ok(())
        }
    };
    let dtor = |_: usize, _: &Value| dtors.set(dtors.get() + 1);
    let val = |d: &Value| d.0.load(Ordering::Relaxed);

    // Nothing exists yet.
    assert!(table.get(obj1, ID1).is_none());
    // Allocate a few (obj, id) pairs; each runs its constructor once.
    let sv1 = table.alloc(obj1, ID1, ctor(1)).unwrap();
    let sv2 = table.alloc(obj2, ID1, ctor(2)).unwrap();
    let sv3 = table.alloc(obj3, ID1, ctor(3)).unwrap();
    let sv4 = table.alloc(obj1, ID2, ctor(4)).unwrap();
    assert_eq!(ctors.get(), 4);
    // Lookups return the same variables.
    assert!(std::ptr::eq(table.get(obj1, ID1).unwrap(), sv1));
    assert!(std::ptr::eq(table.get(obj2, ID1).unwrap(), sv2));
    assert!(std::ptr::eq(table.get(obj3, ID1).unwrap(), sv3));
    assert!(std::ptr::eq(table.get(obj1, ID2).unwrap(), sv4));
    assert_eq!([val(sv1), val(sv2), val(sv3), val(sv4)], [1, 2, 3, 4]);
    // get_or_alloc: allocates once, then returns the same one without the constructor.
    let sv5 = table.get_or_alloc(obj2, ID2, ctor(5)).unwrap();
    assert!(std::ptr::eq(table.get_or_alloc(obj2, ID2, ctor(6)).unwrap(), sv5));
    assert_eq!((ctors.get(), val(sv5)), (5, 5));
    // A duplicate alloc is refused and runs nothing.
    assert_eq!(table.alloc(obj1, ID1, ctor(7)).err(), Some(ShadowError::Exists));
    assert_eq!(ctors.get(), 5);
    // Free one <obj, id>: only it goes, with one destructor call.
    table.free(obj1, ID1, dtor).unwrap();
    assert_eq!(dtors.get(), 1);
    assert!(table.get(obj1, ID1).is_none());
    assert!(table.get(obj1, ID2).is_some());
    // free_all(ID1) frees obj2 and obj3 for ID1 only.
    assert_eq!(table.free_all(ID1, dtor), 2);
    assert_eq!(dtors.get(), 3);
    assert!(table.get(obj2, ID1).is_none() && table.get(obj3, ID1).is_none());
    assert!(table.get(obj1, ID2).is_some() && table.get(obj2, ID2).is_some());
    // And ID2.
    assert_eq!(table.free_all(ID2, dtor), 2);
    assert_eq!((dtors.get(), table.len()), (5, 0));
    assert_eq!(table.reclaim(|| {}), 5);
}
